"""model.greedy_decode as one ONNX graph: a traced prologue, then a Loop assembled with onnx.helper."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from textae.config import ModelConfig

GraphShapes = dict[str, dict[str, Any]]  # as textae.export.graphs describes them

def assemble_greedy_loop(
    prologue: onnx.ModelProto, step: onnx.ModelProto, config: ModelConfig, shapes: GraphShapes
) -> onnx.ModelProto:
    """model.greedy_decode as one graph: the traced prologue (sentence_embedding -> initial_state,
    latent_gates), then an ONNX Loop whose body is the traced decoder step (input_ids, latent_gates,
    state -> logits, next_state) plus argmax and <eos> bookkeeping, and which stops once every row is done.

    Assembled with onnx.helper rather than exported from a torch.jit.script loop: the scripted
    loop collects tokens through Sequence ops and casts, and ran 31 us per step on a small model
    where this body runs 12 us (a Python loop over decoder_step: 28 us).
    """
    state_type = shapes["decoder_init"]["state"]
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
    for node in graph.node:
        _rename_outer_references(node, renamed)
    return renamed


def _rename_outer_references(node: onnx.NodeProto, renamed: dict[str, str]) -> None:
    """Subgraphs (an If's branches, say) may read names of the graph around them: follow the renaming."""
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            for inner in attribute.g.node:
                inner.input[:] = [renamed.get(name, name) for name in inner.input]
                _rename_outer_references(inner, renamed)
            for output in attribute.g.output:
                if output.name in renamed:
                    output.name = renamed[output.name]


def _scalar(name: str, value: int | bool) -> onnx.TensorProto:
    return numpy_helper.from_array(np.array(value, dtype=np.bool_ if isinstance(value, bool) else np.int64), name)

