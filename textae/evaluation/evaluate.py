"""Measure an exported model: reconstruction, sentence similarity, linear probes, anomaly detection.

Torch-free: everything runs on `textae.runtime.TextAE` (onnxruntime). Each evaluation has its own
module (reconstruction, similarity, probes, anomalies; their files in readers, their numpy metrics
in metrics); this one checks every input first and runs those asked for.

Scales follow each field's convention: Spearman, accuracy, token accuracy, exact match and chrF are
percentages (0-100, as SentEval and sacrebleu report them); AUROC is a probability (0-1).
"""

from __future__ import annotations

from pathlib import Path

from textae.corpus import check_readable_file
from textae.errors import TextaeError
from textae.evaluation.anomalies import evaluate_anomalies
from textae.evaluation.probes import evaluate_probe
from textae.evaluation.reconstruction import evaluate_reconstruction
from textae.evaluation.report import EvaluationReport
from textae.evaluation.similarity import evaluate_sts
from textae.extras import import_optional
from textae.runtime.beam import check_beam_size
from textae.runtime.model import TextAE


def evaluate_model(
    model: TextAE,
    *,
    text: Path | None = None,
    sts: Path | None = None,
    probe: Path | None = None,
    probe_test: Path | None = None,
    anomalies: tuple[Path, Path] | None = None,
    beam_size: int = 1,
) -> EvaluationReport:
    """Run every evaluation whose input is given; inputs and optional packages are checked first,
    so a typo in the last file does not cost the time of the first evaluation."""
    if probe_test is not None and probe is None:
        raise TextaeError("--probe-test needs --probe (the file the probe is trained on)")
    if text is None and sts is None and probe is None and anomalies is None:
        raise TextaeError("nothing to evaluate: give --text, --sts, --probe and/or --anomalies")
    for path in [text, sts, probe, probe_test, *(anomalies or ())]:
        if path is not None:
            check_readable_file(Path(path))
    check_beam_size(beam_size)
    if text is not None:
        import_optional("sacrebleu", "chrF")
    if probe is not None:
        import_optional("sklearn", "the probe evaluation")
    report = EvaluationReport(str(model.folder))
    if text is not None:
        report.reconstruction = evaluate_reconstruction(model, Path(text), beam_size=beam_size)
    if sts is not None:
        report.sts = evaluate_sts(model, Path(sts))
    if probe is not None:
        report.probe = evaluate_probe(model, Path(probe), Path(probe_test) if probe_test else None)
    if anomalies is not None:
        report.anomalies = evaluate_anomalies(model, Path(anomalies[0]), Path(anomalies[1]))
    return report
