"""Export a trained run to a self-contained ONNX folder: build it beside its destination, check it,
write its manifest, rename it into place, report.

The torch side of the contract described in `textae.manifest`. The graphs come from
`textae.export.graphs` (the greedy Loop from `textae.export.loop`), the parity checks from
`textae.export.checks`, the int8 graphs and their gate from `textae.export.quantize`. A model that
fails a check is never written: the folder appears under its name only once everything passed.
"""

from __future__ import annotations

import datetime
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from textae import __version__, faults
from textae.atomic import finish_folder, new_build_folder, no_space_error, replace_folder
from textae.config import ModelConfig, load_json
from textae.conformal import sentences_needed
from textae.corpus import iter_corpus, resolve_paths
from textae.cpu import cpu_from_dict
from textae.errors import TextaeError
from textae.export.calibration import calibrate, validation_token_ids
from textae.export.checks import check_parity
from textae.export.graphs import GraphShapes, export_graphs
from textae.export.postprocess import check_postprocess_options, fit_postprocess
from textae.export.quantize import QUANTIZE_CHOICES, compare_precisions, quantize_graphs
from textae.export.weights import TABLE_USERS, make_lean, tables_graph
from textae.manifest import (
    DEFAULT_OPSET,
    FORMAT_VERSION,
    GRAPH_SIGNATURES,
    GRAPHS,
    JOBS,
    MANIFEST_FILE,
    TABLES_FILE,
    TOKEN_GATES,
    WEIGHTS_FILE,
    GraphEntry,
    Manifest,
    TensorInfo,
    graph_file_name,
)
from textae.runtime.model import TextAE
from textae.tokenizer import load_tokenizer, special_token_ids
from textae.training.checkpoint import CONFIG_FILE, SUMMARY_FILE, TOKENIZER_FILE, load_model_from_run

MIN_OPSET = 15  # Shape with start/end (used by the greedy Loop) exists from opset 15
SAMPLE_SIZE = 2000  # real sentences that calibrate int8 and compare it with fp32
_FALLBACK_SENTENCES = [
    "the cat sat on the mat.",
    "we walked along the river after dinner.",
    "she opened the letter and smiled.",
    "the train to the city leaves at noon.",
    "a cold wind blew across the empty field.",
    "he could not remember where he had left his keys.",
    "the children were playing in the garden.",
    "it is raining again.",
]


def default_export_dir(run_dir: Path) -> Path:
    """export/<run folder name>, the folder `textae export` writes when --out is not given."""
    return Path("export") / Path(run_dir).resolve().name


def export_model(
    run_dir: Path,
    out_dir: Path,
    *,
    quantize: str | None = "int8",
    opset: int = DEFAULT_OPSET,
    console: Console | None = None,
    sample_sentences: Sequence[str] | None = None,
    postprocess: str = "whiten",
    whiten_dim: int | None = None,
    feature_source: str | None = None,
) -> dict[str, Any]:
    """Write run_dir's best model to out_dir as ONNX graphs + tokenizer + manifest; return the report.

    quantize="int8" (the default) adds int8 graphs beside the fp32 ones and compares them with fp32
    on sample_sentences (default: the run's validation/training text when it can be found, else a
    few built-in sentences). The manifest names int8 as the precision the runtime loads when it
    passes the gate of `textae.export.quantize`, else fp32, with the reason in the report.
    quantize="none" (or None) writes fp32 only.

    postprocess="whiten" (the default) stores a whitening of the sentence vector and of the
    features, fitted on up to 20,000 training sentences of the run, which `TextAE.embed` applies
    unless asked for raw vectors; whiten_dim keeps that many directions (default: the full width).
    postprocess="none" stores none: embed returns the raw vectors.

    feature_source (vector+tokens, tokens, states or states+tokens) sets what the encoder's
    features output holds instead of the run's own setting: it reads weights every run has, so a
    run trained before the setting existed (its features pooled the states) can be exported with
    the features issue 22 measured better.
    """
    check_postprocess_options(postprocess, whiten_dim)
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise TextaeError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}; got {quantize!r}")
    quantize = None if quantize == "none" else quantize
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise TextaeError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    console = console or Console()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, checkpoint = load_model_from_run(run_dir)
    if feature_source is not None:
        replace(model.config, feature_source=feature_source).validate()
        model.config.feature_source = feature_source  # one config object, shared by encoder and decoder
    tokenizer_path = run_dir / TOKENIZER_FILE
    special_tokens = special_token_ids(load_tokenizer(tokenizer_path), where=str(tokenizer_path))
    config_ids = {name: getattr(model.config, name) for name in special_tokens}
    if special_tokens != config_ids:
        raise TextaeError(f"{tokenizer_path}: special token ids {special_tokens} differ from the model's {config_ids}")
    _check_destination(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    build_dir = new_build_folder(out_dir)
    try:
        with console.status("exporting graphs"):
            shapes = export_graphs(model, build_dir, opset)
        shutil.copyfile(tokenizer_path, build_dir / TOKENIZER_FILE)
        manifest = _manifest(model.config, special_tokens, shapes, opset, _training_summary(run_dir, checkpoint))
        manifest = manifest.with_files(build_dir, ["fp32"])
        manifest.save(build_dir)
        sentences, source = _sample_sentences(run_dir, sample_sentences)
        with console.status("checking the graphs against torch"):
            parity = check_parity(model, build_dir, sentences)
        report: dict[str, Any] = {"out_dir": str(out_dir), "parity": parity, "quantization": None}
        if quantize:
            with console.status("quantizing to int8 and comparing with fp32"):
                quantize_graphs(build_dir, sentences, model, shapes, opset)
                # saved before the comparison, which loads the int8 graphs through the manifest
                manifest = manifest.with_files(build_dir, ["fp32", "int8"])
                manifest.save(build_dir)
                report["quantization"] = compare_precisions(build_dir, sentences, source)
        precisions = ["fp32", "int8"] if quantize else ["fp32"]
        with console.status("sharing the weights"):
            report["weights_bytes"] = make_lean(build_dir, precisions, tables_graph(model, opset))
            if quantize:  # what int8 adds to the folder, against the fp32 weights
                report["quantization"]["size_ratio"] = round(report["weights_bytes"]["int8"] / report["weights_bytes"]["fp32"], 4)
                jobs = {job: verdict["precision"] for job, verdict in report["quantization"]["jobs"].items()}
                manifest = replace(manifest, quantization=report["quantization"], precision=report["quantization"]["default"], job_precisions=jobs)
            manifest = replace(manifest, tables={TOKEN_GATES: {"file": TABLES_FILE, "used_by": list(TABLE_USERS)}})
            manifest = manifest.with_files(build_dir, precisions, [WEIGHTS_FILE, TABLES_FILE])
            manifest.save(build_dir)
        with console.status("checking the lean folder against torch"):
            check_parity(model, build_dir, sentences)  # the shared weights and the table computed at load
        with console.status("calibrating anomaly scores and the latent distribution on the validation split"):
            # every precision the folder holds, on the lean folder as the runtime will read it
            calibration = calibrate(build_dir, precisions, validation_token_ids(run_dir), sentences, source)
            manifest = replace(manifest, calibration=calibration).with_files(build_dir, precisions, [WEIGHTS_FILE, TABLES_FILE])
            manifest.save(build_dir)
            report["calibration"] = {key: calibration[key] for key in ("sentences", "source", "unsupported_percentiles")}
        if postprocess == "whiten":
            with console.status("fitting the whitening of the vectors on training sentences"):
                section = fit_postprocess(build_dir, run_dir, sentences, source, whiten_dim)
                manifest = replace(manifest, postprocess=section).with_files(build_dir, precisions, [WEIGHTS_FILE, TABLES_FILE])
                manifest.save(build_dir)
        report["postprocess"] = manifest.postprocess
        TextAE.load(build_dir)  # the runtime's own checks must accept what was written
        finish_folder(build_dir)
        faults.reached("export:replace")
        replace_folder(build_dir, out_dir)
    except OSError as exc:
        shutil.rmtree(build_dir, ignore_errors=True)
        error = no_space_error(exc, out_dir)
        if error is None:
            raise
        raise error from exc
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    report["files"] = {name: {"bytes": record.bytes, "sha256": record.sha256} for name, record in manifest.files.items()}
    report["folder_bytes"] = sum(record.bytes for record in manifest.files.values()) + (out_dir / MANIFEST_FILE).stat().st_size
    report["model_bytes"] = sum(p.numel() * 4 for p in model.parameters())  # the model's fp32 weights
    report["precision"] = manifest.precision
    report["job_precisions"] = {job: manifest.job_precision(job) for job in JOBS}
    report["seconds"] = round(time.perf_counter() - started, 1)
    _print_report(console, run_dir, out_dir, report)
    return report


# --- the sample --------------------------------------------------------------------------------


def _sample_sentences(run_dir: Path, given: Sequence[str] | None) -> tuple[list[str], str]:
    """Up to SAMPLE_SIZE sentences spread over the given ones, else over the run's validation or
    training text (when those files still exist here), else a few built-in sentences."""
    if given:
        return _spread(list(given)), "given sentences"
    try:
        train = load_json(run_dir / CONFIG_FILE).get("train", {})
    except TextaeError:
        train = {}
    patterns = ([train["valid"]] if train.get("valid") else []) + list(train.get("corpus") or [])
    for pattern in patterns:
        try:
            lines = []
            for line in iter_corpus(resolve_paths([pattern])):
                lines.append(line)
                if len(lines) >= 40 * SAMPLE_SIZE:
                    break
        except TextaeError:
            continue  # moved, deleted or unreadable since training: try the next source
        if lines:
            return _spread(lines), pattern
    return list(_FALLBACK_SENTENCES), "built-in sentences"


def _spread(lines: list[str]) -> list[str]:
    stride = max(1, len(lines) // SAMPLE_SIZE)
    return lines[::stride][:SAMPLE_SIZE]


# --- the folder ------------------------------------------------------------------------------


def _manifest(
    config: ModelConfig,
    special_tokens: dict[str, int],
    shapes: GraphShapes,
    opset: int,
    training: dict[str, Any],
) -> Manifest:
    """The manifest of a folder holding only the fp32 graphs; files are recorded by `with_files`."""
    graphs = {}
    for graph, (inputs, outputs) in GRAPH_SIGNATURES.items():
        tensors = [TensorInfo(name, shapes[graph][name][0], tuple(shapes[graph][name][1])) for name in inputs + outputs]
        graphs[graph] = GraphEntry(tuple(tensors[: len(inputs)]), tuple(tensors[len(inputs) :]), {})
    return Manifest(
        format_version=FORMAT_VERSION,
        model=config,
        special_tokens=special_tokens,
        graphs=graphs,
        precision="fp32",
        files={},
        tokenizer=TOKENIZER_FILE,
        textae_version=__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        opset=opset,
        producer={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        training=training,
        tables={},
        job_precisions=dict.fromkeys(JOBS, "fp32"),  # until the int8 gates say otherwise
    )


def _training_summary(run_dir: Path, checkpoint: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"run": run_dir.resolve().name, "step": _plain(checkpoint.get("step"))}
    summary["metrics"] = _plain(checkpoint.get("metrics") or {})
    if (run_dir / SUMMARY_FILE).is_file():
        try:
            summary["summary"] = _plain(load_json(run_dir / SUMMARY_FILE))
        except TextaeError:
            summary["summary"] = None  # a damaged summary must not block the export of good weights
    return summary


def _plain(value: Any) -> Any:
    """JSON-safe copy of checkpoint metadata (tensors become numbers, non-finite floats None)."""
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _check_destination(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise TextaeError(f"{out_dir}: exists and is not a folder")
        if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
            raise TextaeError(f"{out_dir}: exists and is not a textae export folder; refusing to overwrite it")


# --- report ----------------------------------------------------------------------------------


def _print_report(console: Console, run_dir: Path, out_dir: Path, report: dict[str, Any]) -> None:
    files = report["files"]
    precisions = ["fp32", "int8"] if report["quantization"] else ["fp32"]
    table = Table(title=f"{run_dir} -> {out_dir}", title_justify="left")
    table.add_column("graph")
    for precision in precisions:
        table.add_column(precision, justify="right")
    for graph in GRAPHS:
        table.add_row(graph, *(_megabytes(files[graph_file_name(graph, p)]["bytes"]) for p in precisions))
    console.print(table)
    added, model_bytes = report["weights_bytes"], report["model_bytes"]
    console.print(
        f"{WEIGHTS_FILE} (shared by all graphs) {_megabytes(sum(added.values()))}: "
        + ", ".join(f"{precision} {_megabytes(size)} = x{size / model_bytes:.2f}" for precision, size in added.items())
        + f" the model's fp32 weights ({_megabytes(model_bytes)}); whole folder {_megabytes(report['folder_bytes'])}"
    )
    parity = report["parity"]
    shapes = " and ".join(f"{rows}x{columns}" for rows, columns in parity["batches"])
    console.print(
        f"parity with torch on {shapes} batches: embeddings max |diff| "
        f"{parity['embedding_max_abs_diff']:.1e}, features {parity['features_max_abs_diff']:.1e}, "
        f"scores {parity['score_max_abs_diff']:.1e} "
        f"(tolerance {parity['tolerance']:g}); greedy ids identical (Loop and step graphs)"
    )
    quantization = report["quantization"]
    if quantization:
        console.print(
            f"int8 vs fp32 on {quantization['sentences']} sentences ({quantization['source']}), "
            f"{quantization['weight_bits']}-bit weights, on {cpu_from_dict(quantization['cpu']).describe()}: "
            f"size x{quantization['size_ratio']:.2f}, speed x{quantization['speed_ratio']:.2f}, "
            f"min cosine {quantization['min_cosine']:.4f} (mean {quantization['mean_cosine']:.4f}, "
            f"features {quantization['features_min_cosine']:.4f}), "
            f"greedy reconstructions identical {quantization['reconstructions_identical']}, "
            f"batch invariance max |diff| {quantization['batch_invariance_max_abs_diff']:.1e} "
            f"({'batch-invariant' if quantization['batch_invariant'] else 'NOT batch-invariant'})"
        )
        if quantization["warning"]:
            console.print(f"[bold yellow]warning:[/] {quantization['warning']}")
    calibration = report["calibration"]
    unsupported = calibration["unsupported_percentiles"]
    console.print(f"flag thresholds: conformal, from {calibration['sentences']:,} {calibration['source']}")
    if unsupported:
        console.print(
            f"[bold yellow]warning:[/] {calibration['sentences']:,} calibration sentences cannot support "
            + ", ".join(f"--flag-percentile {key} (needs {sentences_needed(float(key)):,})" for key in unsupported)
            + "; the export refuses them. Train with --valid FILE holding more unseen in-domain text."
        )
    for output, entry in (report.get("postprocess") or {}).items():
        console.print(f"embed {output}: whitened {entry['input_dim']} -> {entry['dim']} dims by default "
                      f"(fitted on {entry['sentences']:,} {entry['source']}; raw with --raw)")  # fmt: skip
        if output == "sentence_embedding" and entry["dim"] < entry["input_dim"]:
            # a whitening that drops directions cannot be undone: decode then needs raw vectors
            console.print(f"[bold yellow]note:[/] the whitening keeps {entry['dim']} of {entry['input_dim']} dims, so "
                          "decode needs raw vectors (embed raw=True, decode raw=True)")  # fmt: skip
    loads = ", ".join(f"{precision} to {job}" for job, precision in report["job_precisions"].items())
    console.print(f"runtime loads {loads}; wrote {out_dir} in {report['seconds']} s")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"
