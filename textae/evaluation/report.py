"""The evaluation report: one dataclass of every result, as JSON (`--json`) or as rich tables."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from textae.evaluation.anomalies import AnomalyResult
from textae.evaluation.probes import ProbeResult
from textae.evaluation.reconstruction import ReconstructionResult
from textae.evaluation.similarity import StsResult


@dataclass
class EvaluationReport:
    model: str
    reconstruction: ReconstructionResult | None = None
    sts: StsResult | None = None
    probe: ProbeResult | None = None
    anomalies: AnomalyResult | None = None

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value is not None}


def print_report(report: EvaluationReport, console: Console) -> None:
    """The report as rich tables: reconstruction by length bucket, then one row per other evaluation."""
    if report.reconstruction is not None:
        result = report.reconstruction
        table = Table(title=f"reconstruction of {result.path}", title_justify="left")
        for column in ("tokens", "sentences", "token accuracy %", "exact match %", "chrF"):
            table.add_column(column, justify="right")
        for bucket in result.buckets:
            table.add_row(bucket.tokens, f"{bucket.sentences:,}", f"{bucket.token_accuracy:.1f}", f"{bucket.exact_match:.1f}", f"{bucket.chrf:.1f}")
        table.add_row("[bold]all", f"[bold]{result.sentences:,}", f"[bold]{result.token_accuracy:.1f}", f"[bold]{result.exact_match:.1f}", f"[bold]{result.chrf:.1f}")
        console.print(table)
    # the result column first: when the terminal is narrow, rich wraps the long "on" column instead
    summary = Table(title="embeddings and scores" if report.reconstruction is None else None)
    summary.add_column("evaluation", no_wrap=True)
    summary.add_column("result", justify="right", no_wrap=True)
    summary.add_column("on")
    if report.sts is not None:
        summary.add_row("similarity", f"Spearman x100 {report.sts.spearman:.1f}", f"{report.sts.path} ({report.sts.pairs:,} pairs)")
    if report.probe is not None:
        probe = report.probe
        if probe.test_path is None:
            accuracy, how = f"accuracy {probe.accuracy:.1f} ± {probe.accuracy_std:.1f} %", f"{probe.folds}-fold CV"
        else:
            accuracy, how = f"accuracy {probe.accuracy:.1f} %", f"tested on {probe.test_path} ({probe.test_examples:,})"
        summary.add_row("probe", accuracy, f"{probe.path} ({probe.examples:,}, {len(probe.classes)} labels), {how}")
    if report.anomalies is not None:
        anomalies = report.anomalies
        summary.add_row(
            "anomalies",
            f"AUROC {anomalies.auroc:.3f}",
            f"in {anomalies.in_path} ({anomalies.in_sentences:,}, mean score {anomalies.in_mean_score:.2f}) vs "
            f"out {anomalies.out_path} ({anomalies.out_sentences:,}, mean score {anomalies.out_mean_score:.2f})",
        )
    if summary.row_count:
        console.print(summary)
