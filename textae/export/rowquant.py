"""The int8 encoder with one activation scale per row: fast like dynamic quantization, batch-invariant like fp32.

Dynamic quantization (onnxruntime's DynamicQuantizeLSTM) scales each activation matrix by its
largest value over the whole batch, so a sentence's vector depends on its batch-mates. Here every
matrix product quantizes each row (a token, or a sentence's state) by that row's own largest value,
and each weight column by its own: row r of x @ W is

    round(x[r] / s[r]) @ round(W / t) * s[r] * t      s[r] = max|x[r]| / 127, t[j] = max|W[:, j]| / 63

which reads nothing from any other row. The weights keep 7 bits (-63..63) so that the product is
exact integer arithmetic on every x86-64 CPU: without VNNI (AVX2, AVX-512F), onnxruntime multiplies
uint8 by int8 with vpmaddubsw, which adds each pair of products into a saturating int16. The
activations are stored as q + 128 (1..255), so a pair reaches 2 * 255 * 63 = 32,130, below 32,767;
with 8-bit weights it reached 64,770 and the sums came out wrong. VNNI and AMX add the products in
int32 and were exact either way: one export now gives the same integers everywhere. The recurrence is written out as an ONNX Scan whose body
is the traced cell (as the greedy decoder's is), so that its matrix products can be integer ones.

The torch modules below compute the quantized products in float32 on integer-valued operands:
with |q| <= 127, |w| <= 63 and at most EXACT_TERMS terms every partial sum is an integer below
2^24, so float32 adds them exactly. `integer_matmuls` then turns each such MatMul into MatMulInteger on int8 tensors,
the same numbers from the CPU's int8 engine.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import Tensor, nn

from textae.export.graphs import FoldedLayer, GraphShapes, _frozen, trace_to_onnx
from textae.export.loop import _prefix_names, _scalar
from textae.manifest import INT8_WEIGHT_BITS
from textae.training.model import (
    Autoencoder,
    join_features,
    mean_and_max,
    pool,
    pool_tokens,
    reverse_within_lengths,
)

ACTIVATION_LEVELS = 127.0  # activations: symmetric int8, -127..127, stored as uint8 q + 128
WEIGHT_LEVELS = float(2 ** (INT8_WEIGHT_BITS - 1) - 1)  # 63: 7-bit weights never saturate an int16 pair (module doc)
ACTIVATION_ZERO_POINT = 128
ZERO_POINT, ZERO_POINT_FLOAT, ONE = "row_quant/zero_point", "row_quant/zero_point_float", "row_quant/one"
# longest dot product whose integer partial sums float32 holds exactly (the torch twin's arithmetic)
EXACT_TERMS = int(2**24 // (ACTIVATION_LEVELS * WEIGHT_LEVELS))


def supports_row_quantization(model: Autoencoder) -> bool:
    """A forward encoder of hidden width <= EXACT_TERMS; a bidirectional one needs packing (static int8)."""
    config = model.config
    widths = [config.embedding_dim, config.hidden_size]
    return not config.bidirectional and max(widths) <= EXACT_TERMS


class RowQuantAffine(nn.Module):
    """x @ weight + bias with per-row int8 activations and per-column int8 weights (see module doc)."""

    def __init__(self, weight: Tensor, bias: Tensor) -> None:
        super().__init__()
        exact = weight.detach().double()  # (in, out)
        scale = (exact.abs().amax(0) / WEIGHT_LEVELS).clamp(min=1e-30)  # (out,)
        self.weight_q = _frozen(torch.round(exact / scale))  # integers in [-63, 63]
        self.weight_scale = _frozen(scale)
        self.bias = _frozen(bias)

    def forward(self, x: Tensor) -> Tensor:
        row_scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-30) / ACTIVATION_LEVELS  # (..., 1)
        q = torch.round(x / row_scale)
        # the per-column scale first: onnxruntime fuses MatMulInteger -> Cast -> Mul into one
        # MatMulIntegerToFloat, which reads that Mul as a per-tensor or per-column scale; a
        # (B, 1) x (N,) product there was silently misread (errors of 0.06)
        product = torch.matmul(q, self.weight_q) * self.weight_scale * row_scale
        return product if self.bias is None else product + self.bias


class _Prologue(nn.Module):
    """input_ids (B, T), lengths (B,) -> first-layer input gates (T, B, G*H) and zero states (N, B, H),
    and, when the features read the token embeddings, their masked mean and max (B, 2E), from the
    fp32 table as in the fp32 graph (no product to quantize)."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.config = model.config
        self.embedding = model.embedding
        rnn = model.encoder.rnn
        bias = rnn.bias_ih_l0 + rnn.bias_hh_l0 if _hidden_bias_folds(model) else rnn.bias_ih_l0
        self.input_projection = RowQuantAffine(rnn.weight_ih_l0.t(), bias)

    def forward(self, input_ids: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        lengths = lengths.clamp(min=1)
        if self.config.reverse_input:
            input_ids = reverse_within_lengths(input_ids, lengths)
        embedded = self.embedding(input_ids)  # (B, T, E); the token pools ignore the order
        gates = self.input_projection(embedded).transpose(0, 1)  # (T, B, G*H)
        zeros = torch.zeros_like(gates[0, :, : self.config.hidden_size])  # (B, H)
        states = zeros if self.config.num_layers == 1 else torch.stack([zeros] * self.config.num_layers)
        if self.config.features_read_tokens:
            return gates, states, pool_tokens(embedded, lengths, self.config)
        return gates, states


def _hidden_bias_folds(model: Autoencoder) -> bool:
    """Whether layer 0's hidden bias can join its input bias, once, outside the Scan: in an LSTM or
    RNN cell the two are only ever added; a GRU's reset gate scales the hidden part with its bias."""
    return model.config.cell in ("lstm", "rnn")


class _Step(nn.Module):
    """One encoder step over all layers: the body of the Scan. The states are (layers, B, H), or
    (B, H) for one layer: per step that saves two gathers and two concatenations of the state,
    which at batch 64 cost as much as a fifth of the int8 matrix product."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        rnn, cell = model.encoder.rnn, model.config.cell
        self.layers = nn.ModuleList(FoldedLayer(rnn, cell, layer, RowQuantAffine) for layer in range(model.config.num_layers))
        if _hidden_bias_folds(model):
            self.layers[0].hidden_projection.bias = None  # added once in the prologue instead

    def forward(self, gates_t: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if len(self.layers) == 1:
            top, c_next = self.layers[0](gates_t, h, c)
            return top, c_next, top
        x = gates_t
        hidden, cell = [], []
        for index, layer in enumerate(self.layers):
            x, c_next = layer(x, h[index], c[index])
            hidden.append(x)
            cell.append(c_next)
        return torch.stack(hidden), torch.stack(cell), x


class _Epilogue(nn.Module):
    """The top layer's states (T, B, H) [and the prologue's token pools (B, k*E)] -> sentence_embedding
    (B, Z), pooled as model.encode pools, and features (B, F) as model.encode_with_features joins
    them (from the same per-row int8 states, so the features are batch-invariant too)."""

    def __init__(self, model: Autoencoder) -> None:
        super().__init__()
        self.config = model.config
        self.to_latent = RowQuantAffine(model.encoder.to_latent.weight.t(), model.encoder.to_latent.bias)

    def forward(self, outputs: Tensor, lengths: Tensor, token_pools: Tensor | None = None) -> tuple[Tensor, Tensor]:
        states, lengths = outputs.transpose(0, 1), lengths.clamp(min=1)  # (B, T, H)
        pooled = pool(states, lengths, self.config)  # (B, H)
        state_pools = mean_and_max(states, lengths) if self.config.features_read_states else None
        sentence_embedding = self.to_latent(pooled)
        return sentence_embedding, join_features(sentence_embedding, state_pools, token_pools, self.config)


def row_quantized_encoder(model: Autoencoder, shapes: GraphShapes, opset: int) -> onnx.ModelProto:
    """The encoder graph (input_ids, lengths -> sentence_embedding, features) with per-row int8 products."""
    config = model.config
    hidden, gate_width = config.hidden_size, model.encoder.rnn.weight_ih_l0.size(0)
    input_ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 0, 0, 0], [9, 8, 7, 0, 0]]) % config.vocab_size
    lengths = torch.tensor([5, 2, 3])
    prologue_module, step_module, epilogue_module = _Prologue(model), _Step(model), _Epilogue(model)
    with torch.no_grad():
        gates, state, *token_pools = prologue_module(input_ids, lengths)
        _, _, top = step_module(gates[0], state, state)
    state_type = ("float32", ["batch", hidden] if config.num_layers == 1 else [config.num_layers, "batch", hidden])
    signature = shapes["encoder"]
    # the token embeddings' pools (when the features read them) go from the prologue, which looks
    # the tokens up, past the Scan to the epilogue, which joins the features
    handed_on = ("token_pools",) if config.features_read_tokens else ()
    token_pools_type = {"token_pools": ("float32", ["batch", len(config.token_pools) * config.embedding_dim])} if handed_on else {}
    prologue = trace_to_onnx(
        prologue_module, (input_ids, lengths), "int8 encoder prologue",
        {**signature, "x_gates": ("float32", ["sequence", "batch", gate_width]), "h0": state_type, **token_pools_type},
        (("input_ids", "lengths"), ("x_gates", "h0", *handed_on)), opset,
    )  # fmt: skip
    step = trace_to_onnx(
        step_module, (gates[0], state, state), "int8 encoder step",
        {"gates_t": ("float32", ["batch", gate_width]), "h": state_type, "c": state_type,
         "next_h": state_type, "next_c": state_type, "top_h": ("float32", ["batch", hidden])},
        (("gates_t", "h", "c"), ("next_h", "next_c", "top_h")), opset,
    )  # fmt: skip
    epilogue = trace_to_onnx(
        epilogue_module, (torch.stack([top] * 5), lengths, *token_pools), "int8 encoder epilogue",
        {"outputs": ("float32", ["sequence", "batch", hidden]), "lengths": signature["lengths"], **token_pools_type,
         "sentence_embedding": signature["sentence_embedding"], "features": signature["features"]},
        (("outputs", "lengths", *handed_on), ("sentence_embedding", "features")), opset,
    )  # fmt: skip
    _prefix_names(prologue.graph, "head/", keep={"input_ids", "lengths", "x_gates", "h0", *handed_on})
    _prefix_names(epilogue.graph, "tail/", keep={"outputs", "lengths", "sentence_embedding", "features", *handed_on})
    # The recurrence is a Scan over the first-layer input gates: it hands the body each step's
    # (B, G*H) slice without copying it and writes the states straight into the stacked output,
    # where a Loop gathered x_gates[step] and concatenated its outputs.
    body = step.graph
    _prefix_names(body, "step/", keep={"gates_t", "h", "c", "next_h", "next_c", "top_h"})
    state_dims = state_type[1]
    del body.input[:], body.output[:], body.value_info[:]
    body.input.extend(
        [
            helper.make_tensor_value_info("h", TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("c", TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("gates_t", TensorProto.FLOAT, ["batch", gate_width]),
        ]
    )
    body.output.extend(
        [
            helper.make_tensor_value_info("next_h", TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("next_c", TensorProto.FLOAT, state_dims),
            helper.make_tensor_value_info("top_h", TensorProto.FLOAT, ["batch", hidden]),
        ]
    )
    body.name = "encoder_step"
    # The columns past the longest row are cut before the prologue, so the Scan runs max(lengths)
    # steps (clamped to 1..width): padding never reaches the pooled outputs (they read each row's
    # first lengths[b] states), so a server's bucketed widths cost nothing here either, as the fp32
    # LSTM's sequence_lens does.
    for node in prologue.graph.node:
        node.input[:] = ["used_ids" if name == "input_ids" else name for name in node.input]
    cut_nodes = [
        helper.make_node("Shape", ["input_ids"], ["width_1d"], start=1, end=2),
        helper.make_node("Squeeze", ["width_1d", "axis_0"], ["width"]),
        helper.make_node("ReduceMax", ["lengths"], ["longest"], keepdims=0),
        helper.make_node("Max", ["longest", "one_step"], ["longest_at_least_1"]),
        helper.make_node("Min", ["longest_at_least_1", "width"], ["steps"]),
        helper.make_node("Unsqueeze", ["steps", "axis_0"], ["steps_1d"]),
        helper.make_node("Slice", ["input_ids", "axis_0", "steps_1d", "axis_1"], ["used_ids"]),  # [:, 0:steps]
    ]
    scan_nodes = [helper.make_node("Scan", ["h0", "h0", "x_gates"], ["last_h", "last_c", "outputs"], body=body, num_scan_inputs=1)]
    graph = helper.make_graph(
        cut_nodes + list(prologue.graph.node) + scan_nodes + list(epilogue.graph.node),
        "encoder",
        # declared here, not taken from the prologue: a forward-reading encoder's prologue never
        # reads lengths, and the exporter drops unread inputs
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, signature["input_ids"][1]),
         helper.make_tensor_value_info("lengths", TensorProto.INT64, signature["lengths"][1])],
        list(epilogue.graph.output),
        list(prologue.graph.initializer) + list(epilogue.graph.initializer)
        + [numpy_helper.from_array(np.array([0], dtype=np.int64), "axis_0"),
           numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"), _scalar("one_step", 1)],
    )  # fmt: skip
    opsets = list(step.opset_import) + [helper.make_opsetid("com.microsoft", 1)]  # MatMulIntegerToFloat
    model_proto = helper.make_model(graph, opset_imports=opsets, ir_version=step.ir_version, producer_name="textae")
    return integer_matmuls(model_proto)


def integer_matmuls(model: onnx.ModelProto) -> onnx.ModelProto:
    """Every MatMul whose weight is an integer-valued initializer in [-63, 63] becomes
    Add(128) -> Cast(uint8) -> MatMulInteger(zero point 128) -> Cast(float), or MatMulIntegerToFloat
    when a per-column scale follows, its weight stored as int8; subgraphs included."""
    _rewrite(model.graph)
    return model


def _rewrite(graph: onnx.GraphProto) -> None:
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    nodes, absorbed = [], set()
    needs_constants = False
    for node in graph.node:
        if id(node) in absorbed:
            continue
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rewrite(attribute.g)
        weight = initializers.get(node.input[1]) if node.op_type == "MatMul" else None
        values = numpy_helper.to_array(weight) if weight is not None else None
        if values is None or values.dtype != np.float32 or not _is_int8_valued(values):
            nodes.append(node)
            continue
        weight.CopyFrom(numpy_helper.from_array(values.astype(np.int8), weight.name))
        activation, output = node.input[0], node.output[0]
        # uint8 activations with zero point 128 (q + 128 in 1..255): onnxruntime's int8 x int8
        # MatMulInteger is far slower than its uint8 x int8 kernel (docs/benchmarks.md, int8)
        nodes += [
            helper.make_node("Add", [activation, ZERO_POINT_FLOAT], [f"{output}/shifted"]),
            helper.make_node("Cast", [f"{output}/shifted"], [f"{output}/uint8"], to=TensorProto.UINT8),
        ]
        column_scale = _column_scale(consumers.get(output, []), output, initializers)
        if column_scale is not None:
            # the Mul by the per-column weight scale that follows goes into the kernel itself,
            # which then writes floats: two passes over (B, G*H) fewer at every step
            scale_node, scale_name = column_scale
            absorbed.add(id(scale_node))
            inputs = [f"{output}/uint8", weight.name, ONE, scale_name, ZERO_POINT]
            nodes.append(helper.make_node("MatMulIntegerToFloat", inputs, [scale_node.output[0]], domain="com.microsoft"))
        else:
            nodes += [
                helper.make_node("MatMulInteger", [f"{output}/uint8", weight.name, ZERO_POINT], [f"{output}/int32"]),
                helper.make_node("Cast", [f"{output}/int32"], [output], to=TensorProto.FLOAT),
            ]
        needs_constants = True
    del graph.node[:]
    graph.node.extend(nodes)
    if needs_constants and ZERO_POINT not in initializers:
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, np.uint8), ZERO_POINT),
                numpy_helper.from_array(np.array(ACTIVATION_ZERO_POINT, np.float32), ZERO_POINT_FLOAT),
                numpy_helper.from_array(np.array(1.0, np.float32), ONE),
            ]
        )


def _column_scale(
    users: list[onnx.NodeProto], output: str, initializers: dict[str, onnx.TensorProto]
) -> tuple[onnx.NodeProto, str] | None:
    """The Mul(output, per-column scale initializer) that is output's only use, if there is one."""
    if len(users) != 1 or users[0].op_type != "Mul":
        return None
    other = [name for name in users[0].input if name != output]
    if len(other) != 1 or other[0] not in initializers or len(initializers[other[0]].dims) != 1:
        return None
    return users[0], other[0]


def _is_int8_valued(values: np.ndarray) -> bool:
    return values.ndim == 2 and bool(np.all(np.abs(values) <= WEIGHT_LEVELS)) and bool(np.all(values == np.round(values)))
