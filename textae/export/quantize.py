"""int8 graphs: quantization, their comparison with fp32, and the gates that decide each job's default precision.

Dynamic quantization picks one activation scale per call from the whole batch, so a sentence's
vector depended on the sentences batched with it. The int8 encoder therefore scales each row by
itself (`textae.export.rowquant`: int8 matrix products, the recurrence as a Scan), and
decoder_score is quantized statically: its activation scales are calibrated once, at export, on the
run's own sentences, and are then constants of the graph. A bidirectional encoder (packed
sequences) is quantized statically too; its LSTM then stays fp32. Either way each row is computed
alone, whatever the batch. The decoder graphs that only step from a vector (decoder_init,
decoder_step and the Loop of decoder_greedy, which static quantization cannot enter) keep dynamic
quantization.

Every int8 weight keeps 7 bits (`reduce_range`, as the row-quantized encoder's WEIGHT_LEVELS):
on CPUs without VNNI, onnxruntime's uint8 x int8 kernels add pairs of products in a saturating
int16, which 8-bit weights overflow; with 7 bits the integer sums are exact on every x86-64 CPU,
so one export gives the same int8 results everywhere.

Two jobs, two gates: the encoder alone decides `embed` (its vectors against fp32's), and the whole
text path (the int8 encoder and decoders together) decides `text`: reconstruct, score, generate.
A decoder too undertrained for int8 greedy decoding then no longer keeps the encoder in fp32.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from textae.batching import length_sorted_batches, pad_batch
from textae.cpu import this_cpu
from textae.errors import TextaeError
from textae.evaluation.metrics import row_cosines
from textae.export.graphs import GraphShapes, check_graph_file
from textae.export.rowquant import row_quantized_encoder, supports_row_quantization
from textae.manifest import GRAPHS, INT8_WEIGHT_BITS, JOBS, graph_file_name
from textae.runtime.model import TextAE
from textae.training.model import Autoencoder

QUANTIZE_CHOICES = ("int8", "none")
STATIC_GRAPHS = ("encoder", "decoder_score")  # read token ids: calibrated, batch-invariant
GATE_MIN_COSINE = 0.999  # embed: int8 is the default only with at least this minimum cosine to fp32
GATE_MIN_GREEDY_AGREEMENT = 0.95  # text: ... only with at least this share of greedy reconstructions equal to fp32's
BATCH_INVARIANCE_TOLERANCE = 1e-5  # max abs difference of a sentence's vector alone and in a batch
CALIBRATION_BATCH = 64
CALIBRATION_SENTENCES = 512
RECONSTRUCTION_SAMPLE = 256  # sentences reconstructed by both precisions for the gate
INVARIANCE_SAMPLE = 64  # sentences embedded alone and in one batch


def quantize_graphs(folder: Path, sentences: list[str], model: Autoencoder, shapes: GraphShapes, opset: int) -> None:
    """Write *.int8.onnx beside the fp32 graphs in folder (fp32 graphs with embedded weights)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    runtime = TextAE.load(folder, precision="fp32", num_threads=1)
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs a pre-processing suggestion on every call
    try:
        for graph in GRAPHS:
            source, target = folder / graph_file_name(graph, "fp32"), folder / graph_file_name(graph, "int8")
            try:
                if graph == "encoder" and supports_row_quantization(model):
                    onnx.save(row_quantized_encoder(model, shapes, opset), str(target))
                    check_graph_file(target, graph, shapes[graph])
                elif graph in STATIC_GRAPHS:
                    quantize_static(
                        source,
                        target,
                        _Calibration(runtime, sentences[:CALIBRATION_SENTENCES]),
                        quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8,
                        per_channel=True,
                        reduce_range=True,  # 7-bit weights: exact on CPUs without VNNI (module doc)
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True},
                    )
                else:
                    quantize_dynamic(
                        source,
                        target,
                        weight_type=QuantType.QInt8,
                        reduce_range=True,  # 7-bit weights, as above
                        # not Gather: the token-gates table stays float32, computed at load (textae.export.weights)
                        op_types_to_quantize=["MatMul"],
                        # the decoder's weights are used inside the greedy Loop's body: quantize subgraphs too
                        extra_options={"EnableSubgraph": True},
                    )
            except TextaeError:
                raise
            except Exception as exc:
                raise TextaeError(f"int8 quantization of {graph} failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        logging.disable(previous)


class _Calibration:
    """onnxruntime's CalibrationDataReader over the run's sentences, batched as the runtime batches."""

    def __init__(self, runtime: TextAE, sentences: list[str]) -> None:
        token_ids = runtime.tokenize(sentences) or [[]]
        pad_id = runtime.config.pad_id
        self._batches: Iterator[dict[str, np.ndarray]] = iter(
            dict(zip(("input_ids", "lengths"), pad_batch([token_ids[row] for row in rows], pad_id)))
            for rows in length_sorted_batches([len(ids) for ids in token_ids], CALIBRATION_BATCH)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def compare_precisions(folder: Path, sentences: list[str], source: str) -> dict[str, Any]:
    """int8 against fp32 on real sentences: size, speed, vectors, batch invariance, greedy agreement,
    scores, and each job's verdict (`jobs`): the precision the manifest should name for it, and why.
    The CPU it was measured on is recorded with it."""
    fp32, int8 = TextAE.load(folder, precision="fp32"), TextAE.load(folder, precision="int8")
    vectors, features, seconds = {}, {}, {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        model.embed(sentences[:64])  # warm-up: session creation and first-run allocations
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            vectors[name] = model.embed(sentences)
            timings.append(time.perf_counter() - start)
        seconds[name] = min(timings)
        features[name] = model.embed(sentences, output="features") if model.has_features else vectors[name]
    cosines = row_cosines(vectors["fp32"], vectors["int8"])
    feature_cosines = row_cosines(features["fp32"], features["int8"])
    subset = sentences[:RECONSTRUCTION_SAMPLE]
    same = sum(a == b for a, b in zip(fp32.reconstruct(subset), int8.reconstruct(subset)))
    score_diff = np.abs(fp32.score(subset) - int8.score(subset)) if subset else np.zeros(1)
    sizes = {name: _graph_bytes(folder, name) for name in ("fp32", "int8")}  # replaced by the shared-weights ratio later
    measured = {
        "sentences": len(sentences),
        "source": source,
        "size_ratio": round(sizes["int8"] / sizes["fp32"], 4),
        "speed_ratio": round(seconds["fp32"] / seconds["int8"], 3),
        "min_cosine": round(float(cosines.min()), 6),
        "mean_cosine": round(float(cosines.mean()), 6),
        "features_min_cosine": round(float(feature_cosines.min()), 6),
        "reconstructions_identical": f"{same}/{len(subset)}",
        "greedy_agreement": round(same / max(len(subset), 1), 4),
        "score_max_abs_diff": round(float(score_diff.max()), 6),
        "batch_invariance_max_abs_diff": batch_invariance(int8, sentences[:INVARIANCE_SAMPLE]),
    }
    measured["batch_invariant"] = measured["batch_invariance_max_abs_diff"] <= BATCH_INVARIANCE_TOLERANCE
    jobs = gate_jobs(measured)
    fallen = [f"{job} stays fp32: " + "; ".join(verdict["reasons"]) for job, verdict in jobs.items() if verdict["reasons"]]
    return {
        **measured,
        "gate": {"min_cosine": GATE_MIN_COSINE, "min_greedy_agreement": GATE_MIN_GREEDY_AGREEMENT,
                 "batch_invariance_tolerance": BATCH_INVARIANCE_TOLERANCE},
        "jobs": jobs,
        "weight_bits": INT8_WEIGHT_BITS,  # 7: exact on every x86-64 CPU (an older reader assumes 8)
        "cpu": this_cpu().to_dict(),
        # the one precision a reader that knows no jobs loads for everything: int8 only where both passed
        "default": "int8" if all(verdict["precision"] == "int8" for verdict in jobs.values()) else "fp32",
        "warning": ("int8 is not the default for every job: " + "; ".join(fallen)) if fallen else None,
    }  # fmt: skip


def gate_jobs(measured: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each job's precision from the measured figures: embed reads the encoder's vectors (both
    outputs, batch invariance), text the greedy reconstructions of the whole int8 path."""
    embed_reasons = []
    for name, label in (("min_cosine", "minimum cosine to fp32"), ("features_min_cosine", "features' minimum cosine to fp32")):
        if not measured[name] >= GATE_MIN_COSINE:
            embed_reasons.append(f"{label} {measured[name]:.4f} < {GATE_MIN_COSINE}")
    if not measured["batch_invariant"]:
        embed_reasons.append(f"batch invariance {measured['batch_invariance_max_abs_diff']:.1e} > {BATCH_INVARIANCE_TOLERANCE:g}")
    text_reasons = []
    if not measured["greedy_agreement"] >= GATE_MIN_GREEDY_AGREEMENT:
        text_reasons.append(f"greedy reconstructions equal to fp32 {measured['greedy_agreement']:.1%} < {GATE_MIN_GREEDY_AGREEMENT:.0%}")
    reasons = dict(zip(JOBS, (embed_reasons, text_reasons)))  # JOBS is ("embed", "text")
    figures = {
        "embed": f"minimum cosine to fp32 {measured['min_cosine']:.4f}, features {measured['features_min_cosine']:.4f} "
                 f"(gate {GATE_MIN_COSINE}), batch invariance {measured['batch_invariance_max_abs_diff']:.1e}",
        "text": f"greedy reconstructions equal to fp32 {measured['greedy_agreement']:.1%} (gate {GATE_MIN_GREEDY_AGREEMENT:.0%})",
    }  # fmt: skip
    return {
        job: {"precision": "fp32" if job_reasons else "int8", "reasons": job_reasons, "figures": figures[job]}
        for job, job_reasons in reasons.items()
    }


def batch_invariance(model: TextAE, sentences: list[str]) -> float:
    """Max abs difference between each sentence's vector embedded alone and inside one batch of all."""
    if not sentences:
        return 0.0
    together = model.embed(sentences, batch_size=len(sentences))
    alone = np.concatenate([model.embed([sentence], batch_size=1) for sentence in sentences])
    return float(np.abs(together - alone).max())


def _graph_bytes(folder: Path, precision: str) -> int:
    return sum((folder / graph_file_name(graph, precision)).stat().st_size for graph in GRAPHS)
