"""Hand-built ONNX graph (opset 17) of the Qwen2-style decoder, with the exact
input/output interface of a Hugging Face Optimum `text-generation-with-past`
export of Qwen2:

  inputs : input_ids [batch_size, sequence_length] int64
           attention_mask [batch_size, total_sequence_length] int64
           position_ids [batch_size, sequence_length] int64
           past_key_values.{i}.key / .value [batch_size, kv_heads, past_sequence_length, head_dim] f32
  outputs: logits [batch_size, sequence_length, vocab_size] f32
           present.{i}.key / .value [batch_size, kv_heads, total_sequence_length, head_dim] f32
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from model_jax import NEG, lm_head_matrix, rope_inv_freq

OPSET = 17
IR_VERSION = 8


class G:
    def __init__(self):
        self.nodes: list = []
        self.inits: list = []
        self._n = 0
        self._consts: dict = {}

    def name(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def const_i64(self, vals) -> str:
        key = ("i64", tuple(np.atleast_1d(vals).tolist()), np.ndim(vals))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_i64_{len(self._consts)}",
                                          np.array(vals, dtype=np.int64))
        return self._consts[key]

    def const_f32(self, val: float) -> str:
        key = ("f32", float(val))
        if key not in self._consts:
            self._consts[key] = self.init(f"const_f32_{len(self._consts)}",
                                          np.array(val, dtype=np.float32))
        return self._consts[key]

    def op(self, op_type: str, inputs: list[str], base: str | None = None, n_out: int = 1,
           outputs: list[str] | None = None, **attrs):
        if outputs is None:
            outputs = [self.name(base or op_type) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outputs,
                                           name=self.name(f"/{base or op_type}"), **attrs))
        return outputs[0] if len(outputs) == 1 else outputs


def build_model(params: dict, cfg: dict) -> onnx.ModelProto:
    p = {k: np.asarray(v) if k != "layers" else v for k, v in params.items()}
    H, V, L = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rep = nh // nkv
    eps = cfg["rms_norm_eps"]
    g = G()

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64,
                                      ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64,
                                      ["batch_size", "total_sequence_length"]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64,
                                      ["batch_size", "sequence_length"]),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                             ["batch_size", "sequence_length", V])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(
                f"past_key_values.{i}.{kv}", TensorProto.FLOAT,
                ["batch_size", nkv, "past_sequence_length", hd]))
    for i in range(L):
        for kv in ("key", "value"):
            outputs.append(helper.make_tensor_value_info(
                f"present.{i}.{kv}", TensorProto.FLOAT,
                ["batch_size", nkv, "total_sequence_length", hd]))

    # ---- embeddings
    emb_w = g.init("model.embed_tokens.weight", p["embed"].astype(np.float32))
    h = g.op("Gather", [emb_w, "input_ids"], "embed_tokens", axis=0)

    # ---- rotary cos/sin from position_ids: [B,1,S,hd]
    inv = g.init("model.rotary_emb.inv_freq", rope_inv_freq(cfg))
    pos = g.op("Cast", ["position_ids"], "rotary/pos_f", to=TensorProto.FLOAT)
    pos = g.op("Unsqueeze", [pos, g.const_i64([2])], "rotary/pos_u")
    freqs = g.op("Mul", [pos, inv], "rotary/freqs")
    embr = g.op("Concat", [freqs, freqs], "rotary/emb", axis=-1)
    cos = g.op("Unsqueeze", [g.op("Cos", [embr], "rotary/cos"), g.const_i64([1])], "rotary/cos_u")
    sin = g.op("Unsqueeze", [g.op("Sin", [embr], "rotary/sin"), g.const_i64([1])], "rotary/sin_u")

    # ---- boolean mask [B,1,1,S,T]: causal (key j <= past_len + s) AND attention_mask
    s_len = g.op("Shape", ["input_ids"], "mask/S", start=1, end=2)
    t_len = g.op("Shape", ["attention_mask"], "mask/T", start=1, end=2)
    t_sc = g.op("Squeeze", [t_len, g.const_i64([0])], "mask/T_scalar")
    s_sc = g.op("Squeeze", [s_len, g.const_i64([0])], "mask/S_scalar")
    p_sc = g.op("Sub", [t_sc, s_sc], "mask/P_scalar")
    one = g.const_i64(1)
    zero = g.const_i64(0)
    q_abs = g.op("Range", [p_sc, t_sc, one], "mask/q_abs")  # [S]
    k_idx = g.op("Range", [zero, t_sc, one], "mask/k_idx")  # [T]
    causal = g.op("LessOrEqual", [g.op("Unsqueeze", [k_idx, g.const_i64([0])], "mask/k_u"),
                                  g.op("Unsqueeze", [q_abs, g.const_i64([1])], "mask/q_u")],
                  "mask/causal")  # [S,T]
    pad = g.op("Cast", ["attention_mask"], "mask/pad_bool", to=TensorProto.BOOL)
    pad = g.op("Unsqueeze", [pad, g.const_i64([1, 2, 3])], "mask/pad_u")  # [B,1,1,1,T]
    mask = g.op("And", [pad, causal], "mask/and")  # [B,1,1,S,T]

    eps_c = g.const_f32(eps)
    neg_c = g.const_f32(NEG)
    scale_c = g.const_f32(float(np.float32(1.0 / np.sqrt(hd))))

    def rmsnorm(x, w_name, w, base):
        wn = g.init(w_name, np.asarray(w, np.float32))
        sq = g.op("Mul", [x, x], f"{base}/sq")
        var = g.op("ReduceMean", [sq], f"{base}/mean", axes=[-1], keepdims=1)
        den = g.op("Sqrt", [g.op("Add", [var, eps_c], f"{base}/add_eps")], f"{base}/sqrt")
        return g.op("Mul", [g.op("Div", [x, den], f"{base}/div"), wn], f"{base}/mul_w")

    def rotate(x, base):
        x1, x2 = g.op("Split", [x, g.const_i64([hd // 2, hd // 2])], f"{base}/split", n_out=2,
                      axis=-1)
        rh = g.op("Concat", [g.op("Neg", [x2], f"{base}/neg"), x1], f"{base}/rot", axis=-1)
        return g.op("Add", [g.op("Mul", [x, cos], f"{base}/mul_cos"),
                            g.op("Mul", [rh, sin], f"{base}/mul_sin")], f"{base}/rope")

    for i, lp in enumerate(p["layers"]):
        pre = f"model.layers.{i}"
        b = f"layers.{i}"
        x = rmsnorm(h, f"{pre}.input_layernorm.weight", lp["ln1"], f"{b}/input_layernorm")

        def proj(name, wkey, bkey, heads):
            w = g.init(f"{pre}.self_attn.{name}.weight", np.asarray(lp[wkey], np.float32))
            bb = g.init(f"{pre}.self_attn.{name}.bias", np.asarray(lp[bkey], np.float32))
            y = g.op("Add", [g.op("MatMul", [x, w], f"{b}/attn/{name}/MatMul"), bb],
                     f"{b}/attn/{name}/Add")
            y = g.op("Reshape", [y, g.const_i64([0, 0, heads, hd])], f"{b}/attn/{name}/reshape")
            return g.op("Transpose", [y], f"{b}/attn/{name}/transpose", perm=[0, 2, 1, 3])

        q = rotate(proj("q_proj", "wq", "bq", nh), f"{b}/attn/q")
        k = rotate(proj("k_proj", "wk", "bk", nkv), f"{b}/attn/k")
        v = proj("v_proj", "wv", "bv", nkv)
        k = g.op("Concat", [f"past_key_values.{i}.key", k], outputs=[f"present.{i}.key"], axis=2)
        v = g.op("Concat", [f"past_key_values.{i}.value", v], outputs=[f"present.{i}.value"],
                 axis=2)
        q5 = g.op("Reshape", [g.op("Mul", [q, scale_c], f"{b}/attn/q_scale"),
                              g.const_i64([0, nkv, rep, -1, hd])], f"{b}/attn/q5")
        k5 = g.op("Transpose", [g.op("Unsqueeze", [k, g.const_i64([2])], f"{b}/attn/k5")],
                  f"{b}/attn/kT", perm=[0, 1, 2, 4, 3])
        v5 = g.op("Unsqueeze", [v, g.const_i64([2])], f"{b}/attn/v5")
        sc = g.op("MatMul", [q5, k5], f"{b}/attn/scores")  # [B,nkv,rep,S,T]
        sc = g.op("Where", [mask, sc, neg_c], f"{b}/attn/masked")
        w = g.op("Softmax", [sc], f"{b}/attn/softmax", axis=-1)
        o = g.op("MatMul", [w, v5], f"{b}/attn/context")  # [B,nkv,rep,S,hd]
        o = g.op("Reshape", [o, g.const_i64([0, nh, -1, hd])], f"{b}/attn/ctx4")
        o = g.op("Transpose", [o], f"{b}/attn/ctx_t", perm=[0, 2, 1, 3])
        o = g.op("Reshape", [o, g.const_i64([0, 0, nh * hd])], f"{b}/attn/ctx3")
        wo = g.init(f"{pre}.self_attn.o_proj.weight", np.asarray(lp["wo"], np.float32))
        h = g.op("Add", [h, g.op("MatMul", [o, wo], f"{b}/attn/o_proj/MatMul")],
                 f"{b}/attn_residual")

        x = rmsnorm(h, f"{pre}.post_attention_layernorm.weight", lp["ln2"],
                    f"{b}/post_attention_layernorm")
        wg = g.init(f"{pre}.mlp.gate_proj.weight", np.asarray(lp["wg"], np.float32))
        wu = g.init(f"{pre}.mlp.up_proj.weight", np.asarray(lp["wu"], np.float32))
        wd = g.init(f"{pre}.mlp.down_proj.weight", np.asarray(lp["wd"], np.float32))
        gt = g.op("MatMul", [x, wg], f"{b}/mlp/gate_proj/MatMul")
        act = g.op("Mul", [gt, g.op("Sigmoid", [gt], f"{b}/mlp/sigmoid")], f"{b}/mlp/silu")
        up = g.op("MatMul", [x, wu], f"{b}/mlp/up_proj/MatMul")
        dn = g.op("MatMul", [g.op("Mul", [act, up], f"{b}/mlp/mul"), wd],
                  f"{b}/mlp/down_proj/MatMul")
        h = g.op("Add", [h, dn], f"{b}/mlp_residual")

    h = rmsnorm(h, "model.norm.weight", p["norm"], "norm")
    lm = g.init("lm_head.weight", np.ascontiguousarray(np.asarray(lm_head_matrix(p, cfg),
                                                                  np.float32)))
    g.op("MatMul", [h, lm], outputs=["logits"])

    graph = helper.make_graph(g.nodes, "r1_edge_mini", inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="r1-hybrid/models/build/make_model.py",
                              producer_version="1")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
