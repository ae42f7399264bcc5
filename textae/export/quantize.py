"""int8 graphs: quantization, their comparison with fp32, and the gate that decides the default precision.

Dynamic quantization picks one activation scale per call from the whole batch, so a sentence's
vector depended on the sentences batched with it (up to 0.025 apart, cosine 0.99988). The int8
encoder therefore scales each row by itself (`textae.export.rowquant`: int8 matrix products, the
recurrence as a Loop), and decoder_score is quantized statically: its activation scales are
calibrated once, at export, on the run's own sentences, and are then constants of the graph. A
bidirectional encoder (packed sequences) is quantized statically too; its LSTM then stays fp32.
Either way each row is computed alone, whatever the batch. The decoder graphs that only step from
a vector (decoder_init, decoder_step and the Loop of decoder_greedy, which static quantization
cannot enter) keep dynamic quantization; the gate below compares their greedy output with fp32's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from textae.errors import TextaeError
from textae.batching import length_sorted_batches, pad_batch
from textae.evaluation.metrics import row_cosines
from textae.export.graphs import GraphShapes, check_graph_file
from textae.export.rowquant import row_quantized_encoder, supports_row_quantization
from textae.manifest import GRAPHS, graph_file_name
from textae.runtime.model import TextAE
from textae.training.model import Autoencoder

QUANTIZE_CHOICES = ("int8", "none")
STATIC_GRAPHS = ("encoder", "decoder_score")  # read token ids: calibrated, batch-invariant
GATE_MIN_COSINE = 0.999  # int8 becomes the default only with at least this minimum cosine to fp32
GATE_MIN_GREEDY_AGREEMENT = 0.95  # ... and at least this share of greedy reconstructions equal to fp32's
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
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"ActivationSymmetric": True},
                    )
                else:
                    quantize_dynamic(
                        source,
                        target,
                        weight_type=QuantType.QInt8,
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
    and the gate's verdict: which precision the manifest should name as the default, and why."""
    fp32, int8 = TextAE.load(folder, precision="fp32"), TextAE.load(folder, precision="int8")
    vectors = {}
    seconds = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        model.embed(sentences[:64])  # warm-up: session creation and first-run allocations
        timings = []
        for _ in range(2):
            start = time.perf_counter()
            vectors[name] = model.embed(sentences)
            timings.append(time.perf_counter() - start)
        seconds[name] = min(timings)
    cosines = row_cosines(vectors["fp32"], vectors["int8"])
    subset = sentences[:RECONSTRUCTION_SAMPLE]
    same = sum(a == b for a, b in zip(fp32.reconstruct(subset), int8.reconstruct(subset)))
    sizes = {name: _graph_bytes(folder, name) for name in ("fp32", "int8")}  # replaced by the shared-weights ratio later
    min_cosine = float(cosines.min())
    agreement = same / max(len(subset), 1)
    invariance = batch_invariance(int8, sentences[:INVARIANCE_SAMPLE])
    reasons = []
    if not min_cosine >= GATE_MIN_COSINE:
        reasons.append(f"minimum cosine to fp32 {min_cosine:.4f} < {GATE_MIN_COSINE}")
    if not agreement >= GATE_MIN_GREEDY_AGREEMENT:
        reasons.append(f"greedy reconstructions equal to fp32 {agreement:.1%} < {GATE_MIN_GREEDY_AGREEMENT:.0%}")
    return {
        "sentences": len(sentences),
        "source": source,
        "size_ratio": round(sizes["int8"] / sizes["fp32"], 4),
        "speed_ratio": round(seconds["fp32"] / seconds["int8"], 3),
        "min_cosine": round(min_cosine, 6),
        "mean_cosine": round(float(cosines.mean()), 6),
        "reconstructions_identical": f"{same}/{len(subset)}",
        "greedy_agreement": round(agreement, 4),
        "batch_invariance_max_abs_diff": invariance,
        "batch_invariant": invariance <= BATCH_INVARIANCE_TOLERANCE,
        "gate": {"min_cosine": GATE_MIN_COSINE, "min_greedy_agreement": GATE_MIN_GREEDY_AGREEMENT},
        "default": "fp32" if reasons else "int8",
        "warning": ("int8 is not the default: " + "; ".join(reasons)) if reasons else None,
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
