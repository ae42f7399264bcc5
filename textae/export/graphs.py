"""Torch modules traced to ONNX: the graphs' wrappers, their shapes, tracing, and checks of graph files.

Every use of the TorchScript exporter (`torch.onnx.export(..., dynamo=False)`: deprecated upstream,
but the only exporter that handles packed sequences today) lives in this module, behind
`_quiet_exporter`. The greedy decoder's Loop is assembled in `textae.export.loop` around the traced
decoder step.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from textae.config import ModelConfig
from textae.errors import TextaeError
from textae.export.loop import assemble_greedy_loop
from textae.manifest import GRAPH_SIGNATURES, GRAPHS, graph_file_name
from textae.training.model import Autoencoder

TensorSpec = tuple[str, list[str | int]]  # (dtype, shape): a str dimension is a dynamic axis
GraphShapes = dict[str, dict[str, TensorSpec]]  # graph -> tensor name -> spec

# --- graph modules ---------------------------------------------------------------------------
# Wrappers give each graph the exact inputs and outputs of its manifest signature. The encoder
# and the scoring graph are traced from the model itself; the decoder graphs use a "folded"
# decoder whose first-layer input projection is precomputed (see FoldedDecoder).


class EncoderGraph(nn.Module):
    """model.encode, packed (also for a forward RNN): one ONNX LSTM op with sequence_lens, which
    onnxruntime runs only up to the batch's longest row, so a server's bucketed padding is free.
    Folding the embedding into a hand-written Loop was measured slower (53 vs 37 ms for a 64x30
    batch of a 256/512 bi-LSTM): the op's single input GEMM over all steps is already cheap."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode_with_features(input_ids, lengths, packed=True)  # (B, Z), (B, F)


class ScoreGraph(nn.Module):
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


class FoldedLayer(nn.Module):
    """One decoder layer written out as its cell equations, torch's gate order and biases.

    Layer 0 receives its input gates precomputed; the layers above project their input here.
    The LSTM cell state c passes through the other cells untouched.
    """

    def __init__(self, rnn: nn.RNNBase, cell: str, layer: int, affine: type[nn.Module] | None = None) -> None:
        super().__init__()
        affine = affine or _Affine  # the int8 encoder passes its row-quantized affine map
        self.cell = cell
        self.hidden_size = rnn.hidden_size
        weight_ih, bias_ih = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"bias_ih_l{layer}")
        self.input_projection = affine(weight_ih.t(), bias_ih) if layer > 0 else None
        self.hidden_projection = affine(getattr(rnn, f"weight_hh_l{layer}").t(), getattr(rnn, f"bias_hh_l{layer}"))

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


class FoldedDecoder(nn.Module):
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
        self.layers = nn.ModuleList([FoldedLayer(rnn, config.cell, layer) for layer in range(config.num_layers)])
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


class GreedyPrologue(nn.Module):
    """What the greedy Loop computes once, before its first step."""

    def __init__(self, decoder: FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, sentence_embedding: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.initial_state(sentence_embedding), self.decoder.latent_gates(sentence_embedding)


class GreedyStep(nn.Module):
    """One decoding step given the precomputed latent gates: the body of the greedy Loop."""

    def __init__(self, decoder: FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, latent_gates: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.step(input_ids, latent_gates, state)


class InitGraph(nn.Module):
    def __init__(self, decoder: FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, sentence_embedding: Tensor) -> Tensor:
        return self.decoder.initial_state(sentence_embedding)


class StepGraph(nn.Module):
    def __init__(self, decoder: FoldedDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def forward(self, input_ids: Tensor, sentence_embedding: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        return self.decoder.step(input_ids, self.decoder.latent_gates(sentence_embedding), state)


# --- export ----------------------------------------------------------------------------------


def graph_shapes(config: ModelConfig) -> GraphShapes:
    """Per graph and tensor: dtype and shape; names are dynamic axes, numbers are fixed by the model."""
    latent, states = config.latent_dim, 2 if config.cell == "lstm" else 1
    state = ("float32", [states, config.num_layers, "batch", config.hidden_size])
    ids, lengths = ("int64", ["batch", "sequence"]), ("int64", ["batch"])
    embedding = ("float32", ["batch", latent])
    return {
        "encoder": {"input_ids": ids, "lengths": lengths, "sentence_embedding": embedding,
                    "features": ("float32", ["batch", config.feature_dim])},
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


def export_graphs(model: Autoencoder, folder: Path, opset: int) -> GraphShapes:
    config = model.config
    shapes = graph_shapes(config)
    decoder = FoldedDecoder(model).eval()
    # a small example batch; the parity check later uses another batch and sequence length
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0], [9, 8, 7, 0, 0]]) % config.vocab_size
    lengths = torch.tensor([5, 2, 3])
    previous_ids = input_ids[:, 0]  # (B,): the decoder step's input
    with torch.no_grad():
        sentence_embedding = model.encode(input_ids, lengths)
        state = decoder.initial_state(sentence_embedding)
    traced: dict[str, tuple[nn.Module, tuple[Tensor, ...]]] = {
        "encoder": (EncoderGraph(model), (input_ids, lengths)),
        "decoder_score": (ScoreGraph(model), (input_ids, lengths)),
        "decoder_init": (InitGraph(decoder), (sentence_embedding,)),
        "decoder_step": (StepGraph(decoder), (previous_ids, sentence_embedding, state)),
    }
    for graph in GRAPHS:
        if graph == "decoder_greedy":
            proto = greedy_loop(decoder, config, sentence_embedding, shapes, opset)
        else:
            module, example = traced[graph]
            proto = trace_to_onnx(module, example, graph, shapes[graph], GRAPH_SIGNATURES[graph], opset)
        path = folder / graph_file_name(graph, "fp32")
        onnx.save(proto, str(path))
        check_graph_file(path, graph, shapes[graph])
    return shapes


def trace_to_onnx(
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


def greedy_loop(
    decoder: FoldedDecoder, config: ModelConfig, sentence_embedding: Tensor, shapes: GraphShapes, opset: int
) -> onnx.ModelProto:
    """Trace the greedy Loop's prologue and body step; `textae.export.loop` assembles the Loop."""
    state_type = shapes["decoder_init"]["state"]
    with torch.no_grad():
        state, latent_gates = GreedyPrologue(decoder)(sentence_embedding)
    gates_type = ("float32", ["batch", latent_gates.size(1)])
    prologue = trace_to_onnx(
        GreedyPrologue(decoder),
        (sentence_embedding,),
        "decoder_greedy prologue",
        {"sentence_embedding": shapes["decoder_greedy"]["sentence_embedding"], "initial_state": state_type, "latent_gates": gates_type},
        (("sentence_embedding",), ("initial_state", "latent_gates")),
        opset,
    )
    step = trace_to_onnx(
        GreedyStep(decoder),
        (torch.tensor([5, 6, 7]) % config.vocab_size, latent_gates, state),  # previous ids, as in decoder_step
        "decoder_greedy step",
        {**shapes["decoder_step"], "latent_gates": gates_type},
        (("input_ids", "latent_gates", "state"), ("logits", "next_state")),
        opset,
    )
    return assemble_greedy_loop(prologue, step, config, shapes)


def check_graph_file(path: Path, graph: str, shapes: dict[str, TensorSpec]) -> None:
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

