"""Qwen2-style decoder in JAX: the reference forward used for training and for
checking the hand-built ONNX graph.  Weights are kept as [in, out] matrices
(x @ W), i.e. the transpose of PyTorch's nn.Linear layout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

NEG = -3.0e38  # fill value for masked attention scores (finite: no NaN on all-masked rows)


def rope_inv_freq(cfg: dict) -> np.ndarray:
    hd = cfg["head_dim"]
    return (1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2, dtype=np.float64) / hd))).astype(
        np.float32)


def init_params(cfg: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    H, I, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv, hd, L = (cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"],
                      cfg["num_hidden_layers"])
    std = 0.02
    out_std = std / np.sqrt(2 * L)

    def n(shape, s):
        return (rng.standard_normal(shape) * s).astype(np.float32)

    p = {"embed": n((V, H), std), "norm": np.ones(H, np.float32), "layers": []}
    for _ in range(L):
        p["layers"].append({
            "ln1": np.ones(H, np.float32),
            "wq": n((H, nh * hd), std), "bq": np.zeros(nh * hd, np.float32),
            "wk": n((H, nkv * hd), std), "bk": np.zeros(nkv * hd, np.float32),
            "wv": n((H, nkv * hd), std), "bv": np.zeros(nkv * hd, np.float32),
            "wo": n((nh * hd, H), out_std),
            "ln2": np.ones(H, np.float32),
            "wg": n((H, I), std), "wu": n((H, I), std), "wd": n((I, H), out_std),
        })
    if not cfg["tie_word_embeddings"]:
        p["lm_head"] = n((H, V), std)
    return p


def lm_head_matrix(p: dict, cfg: dict):
    """[H, V] matrix used for the logits."""
    return p["embed"].T if cfg["tie_word_embeddings"] else p["lm_head"]


def count_params(p: dict) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(p)))


def rmsnorm(x, w, eps):
    var = jnp.mean(x * x, axis=-1, keepdims=True)
    return x / jnp.sqrt(var + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return jnp.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def forward(p, cfg, input_ids, attention_mask, position_ids, past=None):
    """input_ids/position_ids [B,S] int, attention_mask [B,P+S] int,
    past: list of (k, v) each [B, nkv, P, hd] or None.
    Returns logits [B,S,V] and the list of present (k, v) [B, nkv, P+S, hd]."""
    B, S = input_ids.shape
    T = attention_mask.shape[1]
    P = T - S
    nh, nkv, hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
    rep = nh // nkv
    eps = cfg["rms_norm_eps"]

    h = p["embed"][input_ids]  # [B,S,H]

    inv = jnp.asarray(rope_inv_freq(cfg))
    freqs = position_ids.astype(jnp.float32)[..., None] * inv  # [B,S,hd/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    cos = jnp.cos(emb)[:, None]  # [B,1,S,hd]
    sin = jnp.sin(emb)[:, None]

    q_abs = jnp.arange(P, T)
    k_idx = jnp.arange(T)
    causal = k_idx[None, :] <= q_abs[:, None]  # [S,T]
    mask = causal[None, None, None] & (attention_mask[:, None, None, None, :] != 0)  # [B,1,1,S,T]

    scale = np.float32(1.0 / np.sqrt(hd))
    presents = []
    for i, lp in enumerate(p["layers"]):
        x = rmsnorm(h, lp["ln1"], eps)
        q = (x @ lp["wq"] + lp["bq"]).reshape(B, S, nh, hd).transpose(0, 2, 1, 3)
        k = (x @ lp["wk"] + lp["bk"]).reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
        v = (x @ lp["wv"] + lp["bv"]).reshape(B, S, nkv, hd).transpose(0, 2, 1, 3)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if past is not None:
            k = jnp.concatenate([past[i][0], k], axis=2)
            v = jnp.concatenate([past[i][1], v], axis=2)
        presents.append((k, v))
        q5 = (q * scale).reshape(B, nkv, rep, S, hd)
        s = q5 @ jnp.swapaxes(k, -1, -2)[:, :, None]  # [B,nkv,rep,S,T]
        s = jnp.where(mask, s, NEG)
        w = jax.nn.softmax(s, axis=-1)
        o = (w @ v[:, :, None]).reshape(B, nh, S, hd).transpose(0, 2, 1, 3).reshape(B, S, nh * hd)
        h = h + o @ lp["wo"]
        x = rmsnorm(h, lp["ln2"], eps)
        g = x @ lp["wg"]
        h = h + ((g * jax.nn.sigmoid(g)) * (x @ lp["wu"])) @ lp["wd"]
    h = rmsnorm(h, p["norm"], eps)
    logits = h @ lm_head_matrix(p, cfg)
    return logits, presents
