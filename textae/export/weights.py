"""The lean folder: every graph's weights in one shared file, and the folded decoder table computed at load.

Each graph used to carry its own copy of its weights: the embedding sat in four graphs, and
decoder_greedy and decoder_step each held the folded (vocab, G*H) table of the first decoder
layer's token gates, most of the folder (sizes in docs/benchmarks.md, runtime). Here:

- every initializer of every graph (both precisions) is written once to `weights.bin` (ONNX
  external data; identical tensors, such as the embedding, share one copy) and the graph files
  keep only their structure;
- the token-gates table is not stored at all: `decoder_tables.onnx` computes it from the embedding
  and the first layer's input weights (one matrix product, at load), and the runtime hands it to
  the sessions of decoder_greedy and decoder_step as an external initializer, so the greedy Loop
  keeps the row gather that the fold bought.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from textae.manifest import COMPUTED_LOCATION, GRAPHS, TABLES_FILE, TOKEN_GATES, WEIGHTS_FILE, graph_file_name
from textae.training.model import Autoencoder

TABLE_USERS = ("decoder_greedy", "decoder_step")  # graphs that gather rows of the token-gates table
ALIGNMENT = 64  # byte alignment of each tensor in weights.bin
SMALLEST_SHARED = 1024  # bytes: smaller tensors stay inside their graph file


def tables_graph(model: Autoencoder, opset: int) -> onnx.ModelProto:
    """() -> token_gates (V, G*H) = embedding @ weight_ih[:, :E].T + bias_ih, the fold of FoldedDecoder."""
    rnn, width = model.decoder.rnn, model.config.embedding_dim
    embedding = model.embedding.weight.detach().float().numpy()
    token_weight = rnn.weight_ih_l0.detach()[:, :width].t().contiguous().float().numpy()
    bias = rnn.bias_ih_l0.detach().float().numpy()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["embedding", "token_weight"], ["token_gates_raw"]),
         helper.make_node("Add", ["token_gates_raw", "token_bias"], [TOKEN_GATES])],
        "decoder_tables",
        [],
        [helper.make_tensor_value_info(TOKEN_GATES, TensorProto.FLOAT, list(embedding.shape[:1]) + [bias.shape[0]])],
        [numpy_helper.from_array(embedding, "embedding"), numpy_helper.from_array(token_weight, "token_weight"),
         numpy_helper.from_array(bias, "token_bias")],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="textae")


def make_lean(folder: Path, precisions: list[str], tables: onnx.ModelProto) -> dict[str, int]:
    """Rewrite folder's graphs to share weights.bin and to take the token-gates table at load, and
    write decoder_tables.onnx (files WEIGHTS_FILE and TABLES_FILE); return the bytes each precision
    added to weights.bin, in order (the tables' own weights count with the first)."""
    added: dict[str, int] = {}
    with open(folder / WEIGHTS_FILE, "wb") as handle:
        pool = _WeightPool(handle)
        for precision in precisions:
            before = pool.handle.tell()
            if precision == precisions[0]:
                _share(tables.graph, pool)
                onnx.save(tables, str(folder / TABLES_FILE))
            for graph in GRAPHS:
                path = folder / graph_file_name(graph, precision)
                proto = onnx.load(str(path))
                if graph in TABLE_USERS:
                    _take_table_at_load(proto)
                _share(proto.graph, pool)
                onnx.save(proto, str(path))
            added[precision] = pool.handle.tell() - before
    return added


class _WeightPool:
    """weights.bin, appended to: each distinct tensor once, at an aligned offset."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.offsets: dict[tuple[int, tuple[int, ...], str], tuple[int, int]] = {}

    def place(self, tensor: onnx.TensorProto) -> None:
        data = numpy_helper.to_array(tensor).tobytes()  # little-endian raw bytes, as ONNX stores them
        key = (tensor.data_type, tuple(tensor.dims), hashlib.sha256(data).hexdigest())
        if key not in self.offsets:
            offset = self.handle.tell()
            padding = -offset % ALIGNMENT
            self.handle.write(b"\0" * padding)
            self.offsets[key] = (offset + padding, len(data))
            self.handle.write(data)
        offset, length = self.offsets[key]
        _point_to(tensor, WEIGHTS_FILE, offset, length)


def _share(graph: onnx.GraphProto, pool: _WeightPool) -> None:
    for tensor in graph.initializer:
        if tensor.data_location == TensorProto.EXTERNAL:
            continue  # the computed table
        if _nbytes(tensor) >= SMALLEST_SHARED:
            pool.place(tensor)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _share(attribute.g, pool)


def _take_table_at_load(proto: onnx.ModelProto) -> None:
    """Move the token-gates initializer (inside the greedy Loop's body, or at the top of the step
    graph) to the top level under the name TOKEN_GATES, its data marked as given at load."""
    found = _pop_table(proto.graph)
    if found is None:
        raise ValueError("no token_gates table in a decoder graph")
    table, old_name = found
    _rename_references(proto.graph, old_name, TOKEN_GATES)
    table.name = TOKEN_GATES
    _point_to(table, COMPUTED_LOCATION, 0, _nbytes(table))
    proto.graph.initializer.append(table)


def _pop_table(graph: onnx.GraphProto) -> tuple[onnx.TensorProto, str] | None:
    for index, tensor in enumerate(graph.initializer):
        if tensor.name.endswith("token_gates"):
            table = onnx.TensorProto()
            table.CopyFrom(tensor)
            del graph.initializer[index]
            return table, tensor.name
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found = _pop_table(attribute.g)
                if found is not None:
                    return found
    return None


def _rename_references(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                _rename_references(attribute.g, old, new)


def _point_to(tensor: onnx.TensorProto, location: str, offset: int, length: int) -> None:
    """Make tensor ONNX external data at location[offset : offset + length]; drop its inline bytes."""
    for field in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
        tensor.ClearField(field)
    del tensor.external_data[:]
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _nbytes(tensor: onnx.TensorProto) -> int:
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize
