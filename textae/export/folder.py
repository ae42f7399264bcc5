"""Export a trained run to a self-contained ONNX folder, check it against torch, optionally add int8 graphs.

The torch side of the contract described in `textae.manifest`. Every use of the TorchScript
exporter (`torch.onnx.export(..., dynamo=False)`: deprecated upstream, but the only exporter that
handles packed sequences today) lives in this module, behind `_quiet_exporter`. The greedy decoder's
Loop is assembled with onnx.helper around a traced decoder step.

The folder is built beside its destination, checked (onnx.checker, fixed-vs-dynamic axes, parity
with torch on a batch shaped unlike the export example), and only then renamed into place: a
model that fails a check is never written.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn

from textae import __version__, faults
from textae.atomic import no_space_error, ordinary_mode
from textae.batching import cut_at_eos, pad_batch
from textae.training.checkpoint import CONFIG_FILE, SUMMARY_FILE, TOKENIZER_FILE, load_model_from_run
from textae.config import ModelConfig, load_json, save_json, to_dict
from textae.corpus import iter_corpus, resolve_paths
from textae.errors import TextaeError
from textae.evaluation.metrics import row_cosines
from textae.export.calibration import calibrate, validation_token_ids
from textae.manifest import DEFAULT_OPSET, FORMAT_VERSION, GRAPH_SIGNATURES, GRAPHS, MANIFEST_FILE, calibration_files, file_record, graph_file_name
from textae.training.model import Autoencoder
from textae.runtime.model import TextAE
from textae.tokenizer import load_tokenizer, special_token_ids

TensorSpec = tuple[str, list[str | int]]  # (dtype, shape): a str dimension is a dynamic axis
GraphShapes = dict[str, dict[str, TensorSpec]]  # graph -> tensor name -> spec

QUANTIZE_CHOICES = ("int8",)
PARITY_TOLERANCE = 1e-4  # max abs difference allowed between torch and onnxruntime (embeddings, scores)
INT8_MIN_COSINE = 0.99  # below this minimum cosine to fp32, the int8 report warns
MIN_OPSET = 15  # Shape with start/end (used by the greedy Loop) exists from opset 15
SAMPLE_SIZE = 512  # real sentences compared between fp32 and int8
PARITY_SENTENCES = 16  # of which this many are also checked against torch
RECONSTRUCTION_SAMPLE = 64  # of which this many are also reconstructed by both
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
    quantize: str | None = None,
    opset: int = DEFAULT_OPSET,
    console: Console | None = None,
    sample_sentences: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Write run_dir's best model to out_dir as ONNX graphs + tokenizer + manifest; return the report.

    quantize="int8" adds dynamically quantized graphs beside the fp32 ones and makes them the
    default the runtime loads; the report compares them with fp32 on sample_sentences (default: the
    run's validation/training text when it can be found, else a few built-in sentences).
    """
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise TextaeError(f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}; got {quantize!r}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise TextaeError(f"opset must be an integer >= {MIN_OPSET}, got {opset!r}")
    console = console or Console()
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    model, checkpoint = load_model_from_run(run_dir)
    tokenizer_path = run_dir / TOKENIZER_FILE
    special_tokens = special_token_ids(load_tokenizer(tokenizer_path), where=str(tokenizer_path))
    config_ids = {name: getattr(model.config, name) for name in special_tokens}
    if special_tokens != config_ids:
        raise TextaeError(f"{tokenizer_path}: special token ids {special_tokens} differ from the model's {config_ids}")
    _check_destination(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    _remove_stale_builds(out_dir)
    # the pid in the name tells a later export whether the builder is still running
    build_dir = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".partial", dir=out_dir.parent))
    try:
        with console.status("exporting graphs"):
            shapes = _export_graphs(model, build_dir, opset)
        shutil.copyfile(tokenizer_path, build_dir / TOKENIZER_FILE)
        manifest = _manifest(model.config, special_tokens, shapes, opset, _training_summary(run_dir, checkpoint))
        _write_manifest(build_dir, manifest, ["fp32"])
        sentences, source = _sample_sentences(run_dir, sample_sentences)
        with console.status("checking the graphs against torch"):
            parity = _check_parity(model, build_dir, sentences)
        report: dict[str, Any] = {"out_dir": str(out_dir), "parity": parity, "quantization": None}
        if quantize:
            with console.status("quantizing to int8 and comparing with fp32"):
                _quantize_graphs(build_dir)
                # written twice: the comparison loads the int8 graphs through the manifest first
                _write_manifest(build_dir, manifest, ["fp32", "int8"])
                report["quantization"] = _compare_precisions(build_dir, sentences, source)
                manifest["quantization"] = report["quantization"]
                _write_manifest(build_dir, manifest, ["fp32", "int8"])
        precisions = ["fp32", "int8"] if quantize else ["fp32"]
        with console.status("calibrating anomaly scores and the latent distribution on the validation split"):
            manifest["calibration"] = calibrate(build_dir, precisions, validation_token_ids(run_dir), sentences, source)
            _write_manifest(build_dir, manifest, precisions)
        TextAE.load(build_dir)  # the runtime's own checks must accept what was written
        _finish_folder(build_dir)
        faults.reached("export:replace")
        _replace_folder(build_dir, out_dir)
    except OSError as exc:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise no_space_error(exc, out_dir) or exc
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    report["files"] = manifest["files"]
    report["precision"] = manifest["precision"]
    report["seconds"] = round(time.perf_counter() - started, 1)
    _print_report(console, run_dir, out_dir, report)
    return report


# --- graph modules ---------------------------------------------------------------------------
# Wrappers give each graph the exact inputs and outputs of its manifest signature. The encoder
# and the scoring graph are traced from the model itself; the decoder graphs use a "folded"
# decoder whose first-layer input projection is precomputed (see _FoldedDecoder).


class _EncoderGraph(nn.Module):
    """model.encode as is: packing exports to one ONNX LSTM op with sequence_lens. Folding the
    embedding into a hand-written Loop was measured slower (53 vs 37 ms for a 64x30 batch of a
    256/512 bi-LSTM): the op's single input GEMM over all steps is already cheap."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode_with_features(input_ids, lengths)  # (B, Z), (B, F)


class _ScoreGraph(nn.Module):
    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, lengths: Tensor) -> Tensor:
        return self.model.score(input_ids, lengths)  # (B,)


def _frozen(tensor: Tensor) -> nn.Parameter:
    return nn.Parameter(tensor.detach().float().contiguous(), requires_grad=False)


class _Affine(nn.Module):
    """x @ weight + bias as MatMul + Add: onnxruntime's dynamic quantization rewrites MatMul, not Gemm."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        self.weight = _frozen(weight)  # (in, out)
        self.bias = _frozen(bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.matmul(x, self.weight) + self.bias


class _FoldedLayer(nn.Module):
    """One decoder layer written out as its cell equations, torch's gate order and biases.

    Layer 0 receives its input gates precomputed; the layers above project their input here.
    The LSTM cell state c passes through the other cells untouched.
    """

    def __init__(self, rnn: nn.RNNBase, cell: str, layer: int) -> None:
        super().__init__()
        self.cell = cell
        self.hidden_size = rnn.hidden_size
        weight_ih, bias_ih = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"bias_ih_l{layer}")
        self.input_projection = _Affine(weight_ih.t(), bias_ih) if layer > 0 else None
        self.hidden_projection = _Affine(getattr(rnn, f"weight_hh_l{layer}").t(), getattr(rnn, f"bias_hh_l{layer}"))

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        gates_x = x if self.input_projection is None else self.input_projection(x)  # (B, G*H)
        gates_h = self.hidden_projection(h)  # (B, G*H)
        if self.cell == "lstm":
            i, f, g, o = (gates_x + gates_h).split(self.hidden_size, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if self.cell == "gru":
            x_r, x_z, x_n = gates_x.split(self.hidden_size, 1)
            h_r, h_z, h_n = gates_h.split(self.hidden_size, 1)
            r = torch.sigmoid(x_r + h_r)
            z = torch.sigmoid(x_z + h_z)
            n = torch.tanh(x_n + r * h_n)  # the reset gate scales the hidden part only, as in torch
            return (1.0 - z) * n + z * h, c
        return torch.tanh(gates_x + gates_h), c


class _FoldedDecoder(nn.Module):
    """model.decoder, rearranged for token-by-token decoding.

    The first layer's input is [embedding(token); sentence_embedding]. Its token half is folded into a
    (vocab, G*H) lookup table (a row gather replaces a matmul at every step) and its latent half is
    computed once per sentence, not once per step. Measured on a 256/512 LSTM at batch 1: the greedy
    Loop takes about a quarter less time than with the unfolded decoder, for a table G*H/E times
    the embedding's size (8x for a 256/512 LSTM).
    """

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        config, decoder = model.config, model.decoder
        rnn = decoder.rnn
        if config.cell == "rnn" and rnn.nonlinearity != "tanh":
            raise TextaeError(f"cannot export an RNN decoder with nonlinearity {rnn.nonlinearity!r}")
        self.num_states = 2 if config.cell == "lstm" else 1
        self.num_layers = config.num_layers
        self.hidden_size = config.hidden_size
        width = config.embedding_dim
        # folded in float64 so the table is as exact as the float32 matmul it replaces
        weight_ih = rnn.weight_ih_l0.detach().double()
        embedding = model.embedding.weight.detach().double()
        self.token_gates = _frozen(embedding @ weight_ih[:, :width].T + rnn.bias_ih_l0.detach().double())  # (V, G*H)
        self.latent_weight = _frozen(weight_ih[:, width:].T)  # (Z, G*H)
        self.layers = nn.ModuleList([_FoldedLayer(rnn, config.cell, layer) for layer in range(config.num_layers)])
        self.init_state = _Affine(decoder.init_state.weight.t(), decoder.init_state.bias)
        self.output = nn.ModuleList(_output_projection(model))

    def initial_state(self, sentence_embedding: Tensor) -> Tensor:
        """(B, Z) -> state (S, N, B, H), the layout of model.decoder.initial_state."""
        state = torch.tanh(self.init_state(sentence_embedding))  # (B, S*N*H)
        return state.view(-1, self.num_states, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)

    def latent_gates(self, sentence_embedding: Tensor) -> Tensor:
        return torch.matmul(sentence_embedding, self.latent_weight)  # (B, G*H)

    def step(self, input_ids: Tensor, latent_gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """input_ids (B,) -> logits (B, V) and the next state (S, N, B, H)."""
        x = F.embedding(input_ids, self.token_gates) + latent_gates
        hidden: list[Tensor] = []
        cell: list[Tensor] = []
        for index, layer in enumerate(self.layers):
            h, c = layer(x, state[0, index], state[self.num_states - 1, index])
            hidden.append(h)
            cell.append(c)
            x = h
        states = [hidden, cell] if self.num_states == 2 else [hidden]
        next_state = torch.stack([torch.stack(layers) for layers in states])  # (S, N, B, H)
        for affine in self.output:
            x = affine(x)
        return x, next_state


def _output_projection(model: Autoencoder) -> list[_Affine]:
    """The decoder's hidden -> logits map as one or two affine maps, whichever reads fewer weights."""
    config, decoder = model.config, model.decoder
    if not config.tie_embeddings:
        return [_Affine(decoder.output.weight.t(), decoder.output.bias)]
    embedding = model.embedding.weight.detach().double()  # (V, E)
    projection, projection_bias = decoder.output_projection.weight.detach().double(), decoder.output_projection.bias.detach().double()
    hidden, width, vocab = config.hidden_size, config.embedding_dim, config.vocab_size
    if vocab * hidden <= hidden * width + width * vocab:
        # one (H, V) matrix is smaller than H->E->V when the hidden state is narrower than the embedding
        return [_Affine((embedding @ projection).T, embedding @ projection_bias + decoder.output_bias.detach().double())]
    return [_Affine(projection.T, projection_bias), _Affine(embedding.T, decoder.output_bias)]


class _GreedyPrologue(nn.Module):
    """What the greedy Loop computes once, before its first step."""

    def __init__(self, decoder: _FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, sentence_embedding: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.initial_state(sentence_embedding), self.decoder.latent_gates(sentence_embedding)


class _GreedyStep(nn.Module):
    """One decoding step given the precomputed latent gates: the body of the greedy Loop."""

    def __init__(self, decoder: _FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, latent_gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.step(input_ids, latent_gates, state)


class _InitGraph(nn.Module):
    def __init__(self, decoder: _FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, sentence_embedding: Tensor) -> Tensor:
        return self.decoder.initial_state(sentence_embedding)


class _StepGraph(nn.Module):
    def __init__(self, decoder: _FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, sentence_embedding: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.step(input_ids, self.decoder.latent_gates(sentence_embedding), state)


# --- export ----------------------------------------------------------------------------------


def _graph_shapes(config: ModelConfig) -> GraphShapes:
    """Per graph and tensor: dtype and shape; names are dynamic axes, numbers are fixed by the model."""
    latent, states = config.latent_dim, 2 if config.cell == "lstm" else 1
    state = ("float32", [states, config.num_layers, "batch", config.hidden_size])
    ids, lengths = ("int64", ["batch", "sequence"]), ("int64", ["batch"])
    embedding = ("float32", ["batch", latent])
    return {
        "encoder": {"input_ids": ids, "lengths": lengths, "sentence_embedding": embedding,
                    "features": ("float32", ["batch", config.feature_dim])},  # fmt: skip
        "decoder_greedy": {"sentence_embedding": embedding, "max_length": ("int64", []), "token_ids": ("int64", ["batch", "steps"])},
        "decoder_score": {"input_ids": ids, "lengths": lengths, "score": ("float32", ["batch"])},
        "decoder_init": {"sentence_embedding": embedding, "state": state},
        "decoder_step": {
            "input_ids": ("int64", ["batch"]),
            "sentence_embedding": embedding,
            "state": state,
            "logits": ("float32", ["batch", config.vocab_size]),
            "next_state": state,
        },
    }


def _export_graphs(model: Autoencoder, folder: Path, opset: int) -> GraphShapes:
    config = model.config
    shapes = _graph_shapes(config)
    decoder = _FoldedDecoder(model).eval()
    # a small example batch; the parity check later uses another batch and sequence length
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0], [9, 8, 7, 0, 0]]) % config.vocab_size
    lengths = torch.tensor([5, 2, 3])
    previous_ids = input_ids[:, 0]  # (B,): the decoder step's input
    with torch.no_grad():
        sentence_embedding = model.encode(input_ids, lengths)
        state = decoder.initial_state(sentence_embedding)
    traced: dict[str, tuple[nn.Module, tuple[Tensor, ...]]] = {
        "encoder": (_EncoderGraph(model), (input_ids, lengths)),
        "decoder_score": (_ScoreGraph(model), (input_ids, lengths)),
        "decoder_init": (_InitGraph(decoder), (sentence_embedding,)),
        "decoder_step": (_StepGraph(decoder), (previous_ids, sentence_embedding, state)),
    }
    for graph in GRAPHS:
        if graph == "decoder_greedy":
            proto = _greedy_loop(decoder, config, sentence_embedding, shapes, opset)
        else:
            module, example = traced[graph]
            proto = _trace_to_onnx(module, example, graph, shapes[graph], GRAPH_SIGNATURES[graph], opset)
        path = folder / graph_file_name(graph, "fp32")
        onnx.save(proto, str(path))
        _check_graph_file(path, graph, shapes[graph])
    return shapes


def _trace_to_onnx(
    module: nn.Module,
    example: tuple[Tensor, ...],
    graph: str,
    shapes: dict[str, TensorSpec],
    names: tuple[tuple[str, ...], tuple[str, ...]],
    opset: int,
) -> onnx.ModelProto:
    """Trace module with the TorchScript exporter; string dimensions in shapes become dynamic axes."""
    inputs, outputs = names
    dynamic_axes = {name: {axis: dim for axis, dim in enumerate(shapes[name][1]) if isinstance(dim, str)} for name in inputs + outputs}
    buffer = io.BytesIO()
    with _quiet_exporter():
        try:
            torch.onnx.export(
                module.eval(),
                example,
                buffer,
                dynamo=False,  # the dynamo exporter cannot export pack_padded_sequence
                opset_version=opset,
                input_names=list(inputs),
                output_names=list(outputs),
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise TextaeError(f"ONNX export of {graph} failed: {str(exc).strip().splitlines()[0][:300]}") from exc
    return onnx.load_from_string(buffer.getvalue())


def _greedy_loop(
    decoder: _FoldedDecoder,
    config: ModelConfig,
    sentence_embedding: Tensor,
    shapes: GraphShapes,
    opset: int,
) -> onnx.ModelProto:
    """model.greedy_decode as one graph: the traced prologue, then an ONNX Loop whose body is the
    traced decoder step plus argmax and <eos> bookkeeping, and which stops once every row is done.

    Assembled with onnx.helper rather than exported from a torch.jit.script loop: the scripted
    loop collects tokens through Sequence ops and casts, and ran 31 us per step on a small model
    where this body runs 12 us (a Python loop over decoder_step: 28 us).
    """
    state_type = shapes["decoder_init"]["state"]
    with torch.no_grad():
        state, latent_gates = _GreedyPrologue(decoder)(sentence_embedding)
    gates_type = ("float32", ["batch", latent_gates.size(1)])
    prologue = _trace_to_onnx(
        _GreedyPrologue(decoder),
        (sentence_embedding,),
        "decoder_greedy prologue",
        {"sentence_embedding": shapes["decoder_greedy"]["sentence_embedding"], "initial_state": state_type, "latent_gates": gates_type},
        (("sentence_embedding",), ("initial_state", "latent_gates")),
        opset,
    )
    step = _trace_to_onnx(
        _GreedyStep(decoder),
        (torch.tensor([5, 6, 7]) % config.vocab_size, latent_gates, state),  # previous ids, as in decoder_step
        "decoder_greedy step",
        {**shapes["decoder_step"], "latent_gates": gates_type},
        (("input_ids", "latent_gates", "state"), ("logits", "next_state")),
        opset,
    )
    body = step.graph
    # the body reads latent_gates from the outer graph and gets input_ids and state from the Loop;
    # every other name gets a prefix so nothing in the body shadows a name outside it
    renamed = _prefix_names(body, "step/", keep={"input_ids", "latent_gates", "state"})
    body.initializer.extend([_scalar("pad_id", config.pad_id), _scalar("eos_id", config.eos_id)])
    body.node.extend(
        [
            # argmax straight on the logits: greedy decoding never needs the softmax
            helper.make_node("ArgMax", [renamed["logits"]], ["prediction"], axis=1, keepdims=0),
            # a row that has finished emits <pad>, as in model.greedy_decode
            helper.make_node("Where", ["finished", "pad_id", "prediction"], ["next_ids"]),
            helper.make_node("Equal", ["next_ids", "eos_id"], ["is_eos"]),
            helper.make_node("Or", ["finished", "is_eos"], ["next_finished"]),
            helper.make_node("Cast", ["next_finished"], ["finished_flags"], to=TensorProto.INT32),
            helper.make_node("ReduceMin", ["finished_flags"], ["all_finished_flag"], keepdims=0),
            helper.make_node("Cast", ["all_finished_flag"], ["all_finished"], to=TensorProto.BOOL),
            helper.make_node("Not", ["all_finished"], ["go_on"]),
            helper.make_node("Identity", ["next_ids"], ["emitted"]),  # scan output: one column per step
        ]
    )
    state_dims = state_type[1]
    del body.input[:], body.output[:], body.value_info[:]
    body.input.extend(
        [
            helper.make_tensor_value_info("step", TensorProto.INT64, []),
            helper.make_tensor_value_info("go_on_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("state", TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("finished", TensorProto.BOOL, ["batch"]),
        ]
    )
    body.output.extend(
        [
            helper.make_tensor_value_info("go_on", TensorProto.BOOL, []),
            helper.make_tensor_value_info("next_ids", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info(renamed["next_state"], TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("next_finished", TensorProto.BOOL, ["batch"]),
            helper.make_tensor_value_info("emitted", TensorProto.INT64, ["batch"]),
        ]
    )
    body.name = "greedy_step"
    loop_nodes = [
        helper.make_node("Shape", ["sentence_embedding"], ["batch_shape"], start=0, end=1),
        helper.make_node("Expand", ["bos_id", "batch_shape"], ["bos_ids"]),
        helper.make_node("Expand", ["false", "batch_shape"], ["none_finished"]),
        helper.make_node(
            "Loop",
            ["max_length", "true", "bos_ids", "initial_state", "none_finished"],
            ["last_ids", "last_state", "last_finished", "emitted_ids"],
            body=body,
        ),
        helper.make_node("Transpose", ["emitted_ids"], ["token_ids"], perm=[1, 0]),  # (L, B) -> (B, L)
    ]
    graph = helper.make_graph(
        list(prologue.graph.node) + loop_nodes,
        "decoder_greedy",
        [
            helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, shapes["decoder_greedy"]["sentence_embedding"][1]),
            helper.make_tensor_value_info("max_length", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info("token_ids", TensorProto.INT64, shapes["decoder_greedy"]["token_ids"][1])],
        list(prologue.graph.initializer) + [_scalar("bos_id", config.bos_id), _scalar("false", False), _scalar("true", True)],
    )
    return helper.make_model(graph, opset_imports=step.opset_import, ir_version=step.ir_version, producer_name="textae")


def _prefix_names(graph: onnx.GraphProto, prefix: str, keep: set[str]) -> dict[str, str]:
    """Rename every node, value and initializer of graph except keep; return old -> new names."""
    renamed = {name: prefix + name for node in graph.node for name in node.output if name and name not in keep}
    renamed.update({init.name: prefix + init.name for init in graph.initializer})
    for node in graph.node:
        node.name = prefix + node.name
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
    for init in graph.initializer:
        init.name = renamed[init.name]
    return renamed


def _scalar(name: str, value: int | bool) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.bool_ if isinstance(value, bool) else np.int64), name)


def _check_graph_file(path: Path, graph: str, shapes: dict[str, TensorSpec]) -> None:
    """onnx.checker, then the axes: a dynamic axis fixed to the example's size fails here, not in production."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        raise TextaeError(f"export check failed: onnx.checker rejects {graph}: {str(exc).splitlines()[0][:300]}") from exc
    model = onnx.load(str(path), load_external_data=False)
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        expected = shapes[value.name][1]
        if len(dims) != len(expected):
            raise TextaeError(f"export check failed: {graph} {value.name} has rank {len(dims)}, expected {len(expected)}")
        for axis, (dim, want) in enumerate(zip(dims, expected)):
            fixed = dim.dim_value if dim.HasField("dim_value") else None
            if isinstance(want, str) and fixed is not None:
                raise TextaeError(f"export check failed: {graph} {value.name} axis {axis} ({want}) is fixed to {fixed}, expected dynamic")
            if isinstance(want, int) and fixed is not None and fixed != want:
                raise TextaeError(f"export check failed: {graph} {value.name} axis {axis} is {fixed}, expected {want}")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Contain what the TorchScript exporter prints: Python deprecation and tracer warnings, and C++
    shape-inference warnings written straight to file descriptor 2."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tempfile.TemporaryFile() as sink:
            stderr_fd = os.dup(2)
            try:
                os.dup2(sink.fileno(), 2)
                yield
            finally:
                os.dup2(stderr_fd, 2)
                os.close(stderr_fd)


# --- checks ----------------------------------------------------------------------------------


def _parity_batch(config: ModelConfig) -> tuple[Tensor, Tensor]:
    """Mixed lengths (an empty and a one-token sentence included) padded to a length the export
    example did not have, and a batch size it did not have either."""
    width = min(11, config.max_length)
    lengths = torch.tensor([width, 1, 0, min(4, width), width, min(7, width), 2 if width > 1 else 1])
    generator = torch.Generator().manual_seed(0)
    first_plain = max(config.pad_id, config.bos_id, config.eos_id, config.unk_id) + 1
    input_ids = torch.randint(first_plain, config.vocab_size, (len(lengths), width), generator=generator)
    steps = torch.arange(width).unsqueeze(0)
    input_ids = input_ids.masked_fill(steps >= lengths.unsqueeze(1), config.pad_id)
    return input_ids, lengths


def _check_parity(model: Autoencoder, folder: Path, sentences: list[str]) -> dict[str, Any]:
    """Every fp32 graph against the torch model, on a synthetic batch (odd shape, empty and one-token
    rows) and on real sentences (where a trained model ends rows at different steps); raise naming
    the check and the size of the miss."""
    runtime = TextAE.load(folder, precision="fp32", num_threads=1)
    token_ids = runtime.tokenize(sentences[:PARITY_SENTENCES])
    real_ids, real_lengths = pad_batch(token_ids, model.config.pad_id)
    real = (torch.from_numpy(real_ids), torch.from_numpy(real_lengths))
    worst = {"embedding_max_abs_diff": 0.0, "features_max_abs_diff": 0.0, "score_max_abs_diff": 0.0}
    for input_ids, lengths in (_parity_batch(model.config), real):
        diffs = _check_batch(model, runtime, input_ids, lengths)
        worst = {name: max(worst[name], diffs[name]) for name in worst}
    return {"batches": [list(_parity_batch(model.config)[0].shape), list(real[0].shape)], **worst, "tolerance": PARITY_TOLERANCE}


def _check_batch(model: Autoencoder, runtime: TextAE, input_ids: Tensor, lengths: Tensor) -> dict[str, float]:
    batch = f"a {input_ids.size(0)}x{input_ids.size(1)} batch"
    feeds = {"input_ids": input_ids.numpy(), "lengths": lengths.numpy()}
    max_length = model.config.max_length + 1
    with torch.no_grad():
        torch_embedding, torch_features = model.encode_with_features(input_ids, lengths)
        torch_scores = model.score(input_ids, lengths)
        torch_ids = model.greedy_decode(torch_embedding, max_length).numpy()
    onnx_embedding, onnx_features = runtime.run_graph("encoder", **feeds)
    diffs = {
        "embedding_max_abs_diff": _max_abs_diff(onnx_embedding, torch_embedding.numpy(), "encoder", batch),
        "features_max_abs_diff": _max_abs_diff(onnx_features, torch_features.numpy(), "encoder features", batch),
        "score_max_abs_diff": _max_abs_diff(runtime.run_graph("decoder_score", **feeds)[0], torch_scores.numpy(), "decoder_score", batch),
    }
    loop_feeds = {"sentence_embedding": torch_embedding.numpy(), "max_length": np.array(max_length, dtype=np.int64)}
    _same_ids(runtime.run_graph("decoder_greedy", **loop_feeds)[0], torch_ids, "decoder_greedy (Loop)", batch)
    torch_rows = [cut_at_eos(row, model.config.eos_id) for row in torch_ids]
    step_rows = runtime.greedy_ids(torch_embedding.numpy(), max_length, method="step")
    if step_rows != torch_rows:
        differing = sum(a != b for a, b in zip(step_rows, torch_rows))
        raise TextaeError(f"export check failed: decoder_step ids differ from torch in {differing} of {len(torch_rows)} rows of {batch}")
    return diffs


def _max_abs_diff(got: np.ndarray, want: np.ndarray, graph: str, batch: str) -> float:
    if got.shape != want.shape:
        raise TextaeError(f"export check failed: {graph} returns shape {got.shape} on {batch}, torch {want.shape}")
    diff = float(np.abs(got - want).max())
    if not diff <= PARITY_TOLERANCE:  # also catches NaN
        raise TextaeError(f"export check failed: {graph} differs from torch by {diff:.3g} (max abs; tolerance {PARITY_TOLERANCE:g}) on {batch}")
    return diff


def _same_ids(got: np.ndarray, want: np.ndarray, graph: str, batch: str) -> None:
    if got.shape != want.shape:
        raise TextaeError(f"export check failed: {graph} decoded {got.shape[1]} steps on {batch}, torch {want.shape[1]}")
    rows = np.flatnonzero((got != want).any(axis=1))
    if len(rows):
        step = int(np.flatnonzero(got[rows[0]] != want[rows[0]])[0])
        raise TextaeError(
            f"export check failed: {graph} ids differ from torch in {len(rows)} of {len(got)} rows of {batch} "
            f"(first: row {rows[0]}, step {step})"
        )


# --- int8 ------------------------------------------------------------------------------------


def _quantize_graphs(folder: Path) -> None:
    """Dynamic quantization: int8 weights, activations quantized on the fly; no calibration data."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # the quantizer logs a pre-processing suggestion on every call
    try:
        for graph in GRAPHS:
            try:
                quantize_dynamic(
                    folder / graph_file_name(graph, "fp32"),
                    folder / graph_file_name(graph, "int8"),
                    weight_type=QuantType.QInt8,
                    # the decoder's weights are used inside the greedy Loop's body: quantize subgraphs too
                    extra_options={"EnableSubgraph": True},
                )
            except Exception as exc:
                raise TextaeError(f"int8 quantization of {graph} failed: {str(exc).splitlines()[0][:300]}") from exc
    finally:
        logging.disable(previous)


def _compare_precisions(folder: Path, sentences: list[str], source: str) -> dict[str, Any]:
    """int8 against fp32 on real sentences: size, speed, vector agreement, reconstruction agreement."""
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
    sizes = {name: sum((folder / graph_file_name(g, name)).stat().st_size for g in GRAPHS) for name in ("fp32", "int8")}
    min_cosine = float(cosines.min())
    return {
        "sentences": len(sentences),
        "source": source,
        "size_ratio": round(sizes["int8"] / sizes["fp32"], 4),
        "speed_ratio": round(seconds["fp32"] / seconds["int8"], 3),
        "min_cosine": round(min_cosine, 6),
        "mean_cosine": round(float(cosines.mean()), 6),
        "reconstructions_identical": f"{same}/{len(subset)}",
        "warning": (
            f"minimum cosine {min_cosine:.4f} to fp32 is below {INT8_MIN_COSINE}; int8 vectors may not be interchangeable with fp32"
            if min_cosine < INT8_MIN_COSINE
            else None
        ),
    }


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
) -> dict[str, Any]:
    graphs = {}
    for graph, (inputs, outputs) in GRAPH_SIGNATURES.items():
        describe = [{"name": name, "dtype": shapes[graph][name][0], "shape": shapes[graph][name][1]} for name in inputs + outputs]
        graphs[graph] = {"inputs": describe[: len(inputs)], "outputs": describe[len(inputs) :], "files": {}}
    return {
        "format_version": FORMAT_VERSION,
        "textae_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": to_dict(config),
        "special_tokens": special_tokens,
        "opset": opset,
        "producer": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__},
        "graphs": graphs,
        "precision": "fp32",
        "tokenizer": TOKENIZER_FILE,
        "training": training,
        "quantization": None,
        "calibration": None,
        "files": {},
    }


def _write_manifest(folder: Path, manifest: dict[str, Any], precisions: list[str]) -> None:
    """Record each graph's file per precision and every file's size and sha256; the last precision
    listed is the one the runtime loads by default."""
    names = [TOKENIZER_FILE]
    for graph in GRAPHS:
        manifest["graphs"][graph]["files"] = {p: graph_file_name(graph, p) for p in precisions}
        names.extend(graph_file_name(graph, p) for p in precisions)
    names.extend(calibration_files(manifest.get("calibration")))
    manifest["precision"] = precisions[-1]
    manifest["files"] = {name: file_record(folder / name) for name in sorted(names)}
    save_json(folder / MANIFEST_FILE, manifest)


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


def _finish_folder(folder: Path) -> None:
    """Flush every file to disk and give the folder ordinary permissions: mkdtemp and the atomic
    writers create private (0700/0600) entries, but an export is meant to be read by services."""
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
        path.chmod(ordinary_mode())
    folder.chmod(ordinary_mode(folder=True))


def _remove_stale_builds(out_dir: Path) -> None:
    """Delete the build folders of earlier exports to out_dir that were killed (their process is gone)."""
    prefix = f".{out_dir.name}."
    for entry in out_dir.parent.iterdir():
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if entry.name.startswith(prefix) and entry.is_dir() and entry.suffix in (".partial", ".old") and pid.isdigit() and not _process_alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _replace_folder(build_dir: Path, out_dir: Path) -> None:
    """Rename the finished folder into place; an older export there is moved aside, then deleted."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(build_dir, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(build_dir, out_dir)


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
            f"int8 vs fp32 on {quantization['sentences']} sentences ({quantization['source']}): "
            f"size x{quantization['size_ratio']:.2f}, speed x{quantization['speed_ratio']:.2f}, "
            f"min cosine {quantization['min_cosine']:.4f} (mean {quantization['mean_cosine']:.4f}), "
            f"reconstructions identical {quantization['reconstructions_identical']}"
        )
        if quantization["warning"]:
            console.print(f"[bold yellow]warning:[/] {quantization['warning']}")
    console.print(f"runtime loads {report['precision']}; wrote {out_dir} in {report['seconds']} s")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.2f} MB"
