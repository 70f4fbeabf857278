"""FP32 -> FP16 conversion of the exported r1-edge-mini graph (no retraining).

`onnxconverter-common`'s `float16.convert_float_to_float16(keep_io_types=False)`
does the conversion, so the interface becomes what an Optimum FP16 export has:
`past_key_values.*`, `present.*` and `logits` float16; `input_ids`,
`attention_mask`, `position_ids` int64.  Three regions stay in float32 through
its `node_block_list`, the same places where Hugging Face's Qwen2 computes in
float32 when the model runs in float16:

- rotary embedding: position_ids -> Cast -> * inv_freq -> Cos/Sin (a position
  times a frequency in float16 would lose up to 0.25 rad at position 500); cos
  and sin are cast to float16 once, then applied to q/k in float16;
- RMSNorm statistics: x*x, ReduceMean, +eps, Sqrt, x/rms (x*x overflows float16
  once |x| > 255); the product with the norm weight is float16;
- attention masking and softmax: Where(mask, scores, -3.0e38) and Softmax run in
  float32, so the FP32 graph's fill value is still representable, masked keys get
  exactly zero weight and a fully masked (padding) query row stays finite.
  Scores (q·k) are computed in float16 and cast up; the weights are cast down
  before the product with V.

The converter inserts a float16 Cast after every block-listed node even when
its consumer is also block-listed (fp32 -> fp16 -> fp32 round trips, e.g. on the
rotary frequencies), and one Cast per consumer of the same tensor.  `tidy()`
removes both: a Cast to float whose input is a Cast to float16 of a float tensor
reads that float tensor directly, identical Casts of one tensor are merged, and
nodes whose outputs nothing reads are dropped.  Then the graph is checked
(`onnx.checker` full check, strict shape inference).
"""

from __future__ import annotations

import warnings

import onnx
from onnx import TensorProto

FP16_MAX = 65504.0

# Substrings of node names (from onnx_export.py) that stay float32.
FP32_REGIONS = (
    "/rotary/",
    "_layernorm/sq_", "_layernorm/mean_", "_layernorm/add_eps_", "_layernorm/sqrt_",
    "_layernorm/div_",
    "/norm/sq_", "/norm/mean_", "/norm/add_eps_", "/norm/sqrt_", "/norm/div_",
    "/attn/masked_", "/attn/softmax_",
)


def fp32_block_list(model: onnx.ModelProto) -> list[str]:
    names = [n.name for n in model.graph.node if any(r in n.name for r in FP32_REGIONS)]
    # sanity: 8 rotary nodes, 5 per RMSNorm (9 norms), Where+Softmax per layer
    L = sum(1 for n in model.graph.node if n.op_type == "Softmax")
    want = 8 + 5 * (2 * L + 1) + 2 * L
    if len(names) != want:
        raise RuntimeError(f"fp32 block list has {len(names)} nodes, expected {want}: "
                           "node names in onnx_export.py changed?")
    return names


def _cast_to(node) -> int | None:
    if node.op_type != "Cast":
        return None
    for a in node.attribute:
        if a.name == "to":
            return a.i
    return None


def tidy(model: onnx.ModelProto) -> dict:
    g = model.graph
    graph_outputs = {o.name for o in g.output}
    producer = {o: n for n in g.node for o in n.output}
    init_types = {i.name: i.data_type for i in g.initializer}
    in_types = {i.name: i.type.tensor_type.elem_type for i in g.input}

    def elem_type(name: str) -> int | None:
        if name in init_types:
            return init_types[name]
        if name in in_types:
            return in_types[name]
        p = producer.get(name)
        if p is None:
            return None
        return _cast_to(p)  # None for non-Cast nodes: decided by the block list below

    rename: dict[str, str] = {}
    stats = {"round_trips_removed": 0, "duplicate_casts_merged": 0, "dead_nodes_removed": 0}

    # 1. Cast(to=FLOAT)(Cast(to=FLOAT16)(x)) -> x, when x is float32: an fp32
    #    initializer or graph input, the output of a Cast to FLOAT, or the output
    #    of a block-listed (float32) node.
    for n in g.node:
        if _cast_to(n) != TensorProto.FLOAT:
            continue
        inner = producer.get(n.input[0])
        if inner is None or _cast_to(inner) != TensorProto.FLOAT16:
            continue
        src = inner.input[0]
        if src in graph_outputs or n.output[0] in graph_outputs:
            continue
        src_node = producer.get(src)
        src_is_f32 = (elem_type(src) == TensorProto.FLOAT
                      or (src_node is not None and any(r in src_node.name
                                                       for r in FP32_REGIONS)))
        if src_is_f32:
            rename[n.output[0]] = src
            stats["round_trips_removed"] += 1

    # 2. merge identical Casts of the same tensor
    seen: dict[tuple, str] = {}
    for n in g.node:
        t = _cast_to(n)
        if t is None or n.output[0] in graph_outputs or n.output[0] in rename:
            continue
        key = (rename.get(n.input[0], n.input[0]), t)
        if key in seen:
            rename[n.output[0]] = seen[key]
            stats["duplicate_casts_merged"] += 1
        else:
            seen[key] = n.output[0]

    def resolve(x: str) -> str:
        while x in rename:
            x = rename[x]
        return x

    for n in g.node:
        for k, x in enumerate(n.input):
            if x:
                n.input[k] = resolve(x)

    # 3. drop dead nodes (iterate to a fixed point)
    while True:
        used = {x for n in g.node for x in n.input} | graph_outputs
        keep = [n for n in g.node if any(o in used for o in n.output)]
        if len(keep) == len(g.node):
            break
        stats["dead_nodes_removed"] += len(g.node) - len(keep)
        del g.node[:]
        g.node.extend(keep)
    used = {x for n in g.node for x in n.input}
    dead_inits = [i for i in g.initializer if i.name not in used]
    for i in dead_inits:
        g.initializer.remove(i)
    return stats


def convert(fp32_model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
    from onnxconverter_common import float16

    block = fp32_block_list(fp32_model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # max_finite_val: the library's default clamps |x| > 1e4; float16 holds 65504.
        m16 = float16.convert_float_to_float16(
            fp32_model, keep_io_types=False, max_finite_val=FP16_MAX,
            node_block_list=block)
    info = {
        "tool": "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=False, "
                "max_finite_val=65504, node_block_list=<fp32 regions>)",
        "fp32_nodes_block_listed": len(block),
        "converter_warnings": sorted({str(w.message) for w in caught}),
    }
    # The converter's value_info is redundant; strict shape inference below
    # re-derives every type and fails on any mismatch.
    del m16.graph.value_info[:]
    info.update(tidy(m16))
    m16.producer_name = "r1-hybrid/models/build/make_model.py --fp16-only"
    onnx.checker.check_model(m16, full_check=True)
    onnx.shape_inference.infer_shapes(m16, check_type=True, strict_mode=True)
    info["casts"] = sum(1 for n in m16.graph.node if n.op_type == "Cast")
    info["nodes"] = len(m16.graph.node)
    info["fp32_initializers"] = sorted(i.name for i in m16.graph.initializer
                                       if i.data_type == TensorProto.FLOAT)
    return m16, info
