#!/usr/bin/env python3
"""Builds r1-edge-mini end to end: corpus -> tokenizer -> JAX training ->
hand-built ONNX export (Optimum Qwen2 with-past layout) -> verification ->
INT8 dynamic quantization -> verification -> FP16 conversion -> verification.

    python make_model.py                 # full build (what make.sh runs)
    python make_model.py --steps 0       # untrained (random weights), same interface
    python make_model.py --fp16-only     # only r1-edge-mini-fp16/, converted from the
                                         # committed r1-edge-mini/model.onnx (no training)

Fails loudly (non-zero exit) if any check fails.  Deterministic for a given
set of pinned packages: fixed seeds, fixed step count, no time-based logic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import corpus as corpus_mod  # noqa: E402
import tokenizer_build as tb  # noqa: E402

MODELS = HERE.parent
OUT_FP32 = MODELS / "r1-edge-mini"
OUT_INT8 = MODELS / "r1-edge-mini-int8"
OUT_FP16 = MODELS / "r1-edge-mini-fp16"
SIDE_FILE_NAMES = ("config.json", "generation_config.json", "tokenizer.json",
                   "tokenizer_config.json")
REPORT = HERE / "report.json"

SEED = 20240607
N_TRAIN = 12000
N_HELDOUT = 600
VOCAB_TARGET = 2048
MAX_LEN = 128  # training sequence length cap (every conversation fits)

ARCH = {
    "hidden_size": 128,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 32,
    "max_position_embeddings": 512,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}

HELDOUT_EVAL = 300

SAMPLE_PROMPTS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "What is 7 plus 5?"}],
    [{"role": "user", "content": "What day comes after Monday?"}],
    [{"role": "user", "content": "How do you say apple in Chinese?"}],
    [{"role": "user", "content": "你好！"}],
    [{"role": "user", "content": "日本的首都是哪里？"}],
    [{"role": "user", "content": "3加4等于多少？"}],
    [{"role": "system", "content": "你是一个乐于助人的助手。"},
     {"role": "user", "content": "“猫”用英语怎么说？"}],
]


def log(*a):
    print(*a, flush=True)


def fail(msg: str):
    print(f"VERIFICATION FAILED: {msg}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# --------------------------------------------------------------------------
# atomic file writing
# --------------------------------------------------------------------------

def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------

def encode_conversation(tok, msgs):
    """Token ids of the ChatML rendering and a 0/1 mask of supervised targets
    (assistant content and its closing <|im_end|>)."""
    ids, lab = [], []
    if not msgs or msgs[0]["role"] != "system":
        msgs_r = [{"role": "system", "content": corpus_mod.DEFAULT_SYSTEM}] + msgs
    else:
        msgs_r = msgs
    for m in msgs_r:
        head = tok.encode(f"{tb.IM_START}{m['role']}\n", add_special_tokens=False).ids
        body = tok.encode(f"{m['content']}{tb.IM_END}", add_special_tokens=False).ids
        tail = tok.encode("\n", add_special_tokens=False).ids
        sup = 1 if m["role"] == "assistant" else 0
        ids += head + body + tail
        lab += [0] * len(head) + [sup] * len(body) + [0] * len(tail)
    whole = tok.encode(tb.render_chat(msgs, False), add_special_tokens=False).ids
    if whole != ids:
        fail("piecewise tokenization differs from whole-text tokenization")
    return ids, lab


def build_data(tok, convs):
    seqs = [encode_conversation(tok, c) for c in convs]
    over = [len(s[0]) for s in seqs if len(s[0]) > MAX_LEN]
    if over:
        fail(f"{len(over)} conversations exceed MAX_LEN={MAX_LEN} (max {max(over)})")
    return seqs


def make_batch(seqs, idx):
    L = max(len(seqs[i][0]) for i in idx)
    L = ((L + 15) // 16) * 16
    B = len(idx)
    ids = np.zeros((B, L), np.int32)  # pad = <|endoftext|> = 0
    am = np.zeros((B, L), np.int32)
    lm = np.zeros((B, L), np.float32)
    for r, i in enumerate(idx):
        t, m = seqs[i]
        ids[r, :len(t)] = t
        am[r, :len(t)] = 1
        lm[r, :len(t)] = m
    pos = np.broadcast_to(np.arange(L, dtype=np.int32), (B, L)).copy()
    return ids, am, pos, lm


# --------------------------------------------------------------------------
# training
# --------------------------------------------------------------------------

def train(params, cfg, train_seqs, held_seqs, steps, batch_size, lr):
    import jax
    import jax.numpy as jnp
    import optax

    from model_jax import forward

    def loss_fn(p, ids, am, pos, lm):
        logits, _ = forward(p, cfg, ids, am, pos)
        logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
        nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
        m = lm[:, 1:]
        return (nll * m).sum(), m.sum()

    def mean_loss(p, ids, am, pos, lm):
        s, n = loss_fn(p, ids, am, pos, lm)
        return s / n

    warmup = min(200, max(1, steps // 10))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1),
                                               end_value=lr * 0.05)
    opt = optax.chain(optax.clip_by_global_norm(1.0),
                      optax.adamw(sched, b1=0.9, b2=0.98, weight_decay=0.01))
    params = jax.tree_util.tree_map(jnp.asarray, params)
    state = opt.init(params)

    @jax.jit
    def step(p, s, ids, am, pos, lm):
        loss, g = jax.value_and_grad(mean_loss)(p, ids, am, pos, lm)
        upd, s = opt.update(g, s, p)
        return optax.apply_updates(p, upd), s, loss

    eval_fn = jax.jit(loss_fn)

    def evaluate(p, seqs):
        tot, cnt = 0.0, 0.0
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
        for k in range(0, len(order), 64):
            s, n = eval_fn(p, *make_batch(seqs, order[k:k + 64]))
            tot += float(s)
            cnt += float(n)
        return tot / cnt

    rng = np.random.default_rng(SEED + 1)

    def epoch_batches():
        # Shuffle, then sort windows of 64 batches by length so that a batch holds
        # conversations of similar length (less padding), then shuffle batch order.
        perm = rng.permutation(len(train_seqs))
        win = batch_size * 64
        batches = []
        for w in range(0, len(perm) - batch_size + 1, win):
            chunk = sorted(perm[w:w + win].tolist(), key=lambda i: len(train_seqs[i][0]))
            batches += [chunk[k:k + batch_size]
                        for k in range(0, len(chunk) - batch_size + 1, batch_size)]
        return [batches[j] for j in rng.permutation(len(batches))]

    queue: list = []
    t0 = time.time()
    hist = []
    ema = None
    for it in range(1, steps + 1):
        if not queue:
            queue = epoch_batches()
        idx = queue.pop()
        params, state, loss = step(params, state, *make_batch(train_seqs, idx))
        if it % 50 == 0 or it == steps:
            lv = float(loss)
            ema = lv if ema is None else 0.9 * ema + 0.1 * lv
            hist.append((it, lv))
            if it % 250 == 0 or it == steps:
                log(f"  step {it:5d}/{steps}  loss {lv:.4f}  (ema {ema:.4f})  "
                    f"{time.time() - t0:6.1f}s")
    train_time = time.time() - t0
    params = jax.tree_util.tree_map(np.asarray, params)
    res = {
        "steps": steps,
        "batch_size": batch_size,
        "peak_lr": lr,
        "train_seconds": round(train_time, 1),
        "final_batch_loss": hist[-1][1] if hist else None,
        "train_loss": evaluate(params, train_seqs[:2000]) if steps else None,
        "heldout_loss": evaluate(params, held_seqs),
        "loss_history": hist,
    }
    return params, res


# --------------------------------------------------------------------------
# ONNX Runtime helpers
# --------------------------------------------------------------------------

def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def empty_past(cfg, B, dtype=np.float32):
    return {f"past_key_values.{i}.{kv}": np.zeros((B, cfg["num_key_value_heads"], 0,
                                                    cfg["head_dim"]), dtype)
            for i in range(cfg["num_hidden_layers"]) for kv in ("key", "value")}


def kv_dtype(sess):
    """numpy dtype of the session's past_key_values inputs (float32 or float16)."""
    t = next(i.type for i in sess.get_inputs() if i.name == "past_key_values.0.key")
    return {"tensor(float)": np.float32, "tensor(float16)": np.float16}[t]


def ort_step(sess, cfg, ids, am, pos, past):
    feeds = {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.asarray(am, np.int64),
             "position_ids": np.asarray(pos, np.int64), **past}
    names = ["logits"] + [f"present.{i}.{kv}" for i in range(cfg["num_hidden_layers"])
                          for kv in ("key", "value")]
    outs = sess.run(names, feeds)
    new_past = {f"past_key_values.{n[len('present.'):]}": o for n, o in zip(names[1:], outs[1:])}
    return outs[0], new_past


def greedy_batch(sess, cfg, prompts, max_new, eos_ids, pad_id):
    """Left-padded batched greedy decoding with KV cache.  Returns (generated
    ids per row, prefill logits [B,S,V])."""
    B = len(prompts)
    S = max(len(p) for p in prompts)
    ids = np.full((B, S), pad_id, np.int64)
    am = np.zeros((B, S), np.int64)
    for r, p in enumerate(prompts):
        ids[r, S - len(p):] = p
        am[r, S - len(p):] = 1
    pos = np.clip(np.cumsum(am, axis=1) - 1, 0, None)
    logits, past = ort_step(sess, cfg, ids, am, pos, empty_past(cfg, B, kv_dtype(sess)))
    prefill = logits
    out = [[] for _ in range(B)]
    done = [False] * B
    nxt = logits[:, -1].argmax(-1)
    next_pos = pos[:, -1] + 1
    for _ in range(max_new):
        for r in range(B):
            if not done[r]:
                out[r].append(int(nxt[r]))
                if int(nxt[r]) in eos_ids:
                    done[r] = True
        if all(done):
            break
        am = np.concatenate([am, np.ones((B, 1), np.int64)], axis=1)
        logits, past = ort_step(sess, cfg, nxt[:, None], am, next_pos[:, None], past)
        next_pos = next_pos + 1
        nxt = logits[:, -1].argmax(-1)
    return out, prefill


def greedy_fixed(sess, cfg, prompts, n, pad_id):
    """Exactly n greedy tokens per row (no early stop), left-padded batch."""
    return greedy_batch(sess, cfg, prompts, n, eos_ids=set(), pad_id=pad_id)


# --------------------------------------------------------------------------
# verification
# --------------------------------------------------------------------------

def verify(cfg, params, tok, fp32_path: Path, int8_path: Path | None, report: dict):
    import onnx
    import jax.numpy as jnp

    from model_jax import forward

    eos_ids = {tok.token_to_id(tb.IM_END), tok.token_to_id(tb.ENDOFTEXT)}
    pad_id = tok.token_to_id(tb.ENDOFTEXT)
    V = cfg["vocab_size"]
    L = cfg["num_hidden_layers"]
    R = report.setdefault("verification", {})

    # 1. checker + ORT load
    onnx.checker.check_model(str(fp32_path), full_check=True)
    sess = ort_session(fp32_path)
    want_in = (["input_ids", "attention_mask", "position_ids"]
               + [f"past_key_values.{i}.{kv}" for i in range(L) for kv in ("key", "value")])
    want_out = ["logits"] + [f"present.{i}.{kv}" for i in range(L) for kv in ("key", "value")]
    if [i.name for i in sess.get_inputs()] != want_in:
        fail(f"inputs {[i.name for i in sess.get_inputs()]}")
    if [o.name for o in sess.get_outputs()] != want_out:
        fail(f"outputs {[o.name for o in sess.get_outputs()]}")
    sess8 = None
    if int8_path is not None:
        onnx.checker.check_model(str(int8_path), full_check=True)
        sess8 = ort_session(int8_path)
        if [i.name for i in sess8.get_inputs()] != want_in:
            fail("int8 inputs differ")
        if [o.name for o in sess8.get_outputs()] != want_out:
            fail("int8 outputs differ")
    R["check_model_and_ort_load"] = "ok"
    log("[verify] 1. onnx.checker + ORT load: ok")

    def enc(msgs):
        return tok.encode(tb.render_chat(msgs, True), add_special_tokens=False).ids

    # 2. ORT FP32 vs JAX on a prefill
    prompt = enc(SAMPLE_PROMPTS[1])
    S = len(prompt)
    ids = np.array([prompt], np.int64)
    am = np.ones((1, S), np.int64)
    pos = np.arange(S, dtype=np.int64)[None]
    lo, past = ort_step(sess, cfg, ids, am, pos, empty_past(cfg, 1))
    lj, pj = forward(params, cfg, jnp.asarray(ids), jnp.asarray(am), jnp.asarray(pos))
    d = float(np.abs(lo - np.asarray(lj)).max())
    dk = max(float(np.abs(past[f"past_key_values.{i}.{kv}"] - np.asarray(pj[i][j])).max())
             for i in range(L) for j, kv in enumerate(("key", "value")))
    R["prefill_ort_vs_jax_max_abs_diff"] = d
    R["prefill_present_vs_jax_max_abs_diff"] = dk
    log(f"[verify] 2. prefill ORT vs JAX: logits max|diff| = {d:.3e}, present max|diff| = {dk:.3e}"
        f" (S={S})")
    if lo.shape != (1, S, V) or d > 1e-4 or dk > 1e-4:
        fail(f"prefill ORT vs JAX diff {d} / {dk}, shape {lo.shape}")

    # 3. incremental decoding vs full forward
    gen, _ = greedy_fixed(sess, cfg, [prompt], 16, pad_id)
    full = prompt + gen[0]
    T = len(full)
    lf, _ = ort_step(sess, cfg, np.array([full]), np.ones((1, T), np.int64),
                     np.arange(T)[None], empty_past(cfg, 1))
    k0 = 5
    li, past = ort_step(sess, cfg, np.array([full[:k0]]), np.ones((1, k0), np.int64),
                        np.arange(k0)[None], empty_past(cfg, 1))
    chunks = [li]
    for t in range(k0, T):
        l1, past = ort_step(sess, cfg, np.array([[full[t]]]), np.ones((1, t + 1), np.int64),
                            np.array([[t]]), past)
        chunks.append(l1)
    linc = np.concatenate(chunks, axis=1)
    d_inc = float(np.abs(linc - lf).max())
    ljf, _ = forward(params, cfg, jnp.asarray(np.array([full])), jnp.ones((1, T), jnp.int32),
                     jnp.arange(T)[None])
    d_incj = float(np.abs(linc - np.asarray(ljf)).max())
    pshape = past["past_key_values.0.key"].shape
    R["incremental_vs_full_max_abs_diff"] = d_inc
    R["incremental_vs_jax_full_max_abs_diff"] = d_incj
    log(f"[verify] 3. incremental ({k0}-token prefill + {T - k0} single steps) vs full forward: "
        f"max|diff| = {d_inc:.3e} (vs JAX {d_incj:.3e}); present shape {pshape}")
    if d_inc > 1e-4 or d_incj > 1e-4 or pshape != (1, cfg["num_key_value_heads"], T,
                                                   cfg["head_dim"]):
        fail(f"incremental decoding mismatch {d_inc} / {d_incj} {pshape}")

    # 4. left-padded batch of 3 prompts vs each alone
    prompts = [enc(SAMPLE_PROMPTS[0]), enc(SAMPLE_PROMPTS[6]), enc(SAMPLE_PROMPTS[8])]
    lens = [len(p) for p in prompts]
    if len(set(lens)) != 3:
        fail(f"padded-batch prompts should have different lengths: {lens}")
    bgen, bpre = greedy_fixed(sess, cfg, prompts, 20, pad_id)
    Smax = max(lens)
    worst = 0.0
    same = True
    for r, p in enumerate(prompts):
        sgen, spre = greedy_fixed(sess, cfg, [p], 20, pad_id)
        dd = float(np.abs(bpre[r, Smax - len(p):] - spre[0]).max())
        worst = max(worst, dd)
        same &= (sgen[0] == bgen[r])
    R["left_padded_batch"] = {"prompt_lengths": lens, "max_abs_diff_logits": worst,
                              "greedy20_identical": bool(same)}
    log(f"[verify] 4. left-padded batch lengths {lens}: per-row prefill logits max|diff| = "
        f"{worst:.3e}; 20-token greedy identical: {same}")
    if worst > 1e-4 or not same:
        fail("left-padded batch differs from single-row runs")

    if sess8 is not None:
        # Informational: dynamic INT8 quantizes activations with one scale per
        # tensor, computed over the whole batch, so a padded batch is NOT exactly
        # equal to single-row runs for the INT8 model (it is for FP32, above).
        b8, p8 = greedy_fixed(sess8, cfg, prompts, 20, pad_id)
        w8, same8 = 0.0, 0
        for r, p in enumerate(prompts):
            s8, sp8 = greedy_fixed(sess8, cfg, [p], 20, pad_id)
            w8 = max(w8, float(np.abs(p8[r, Smax - len(p):] - sp8[0]).max()))
            same8 += int(s8[0] == b8[r])
        R["left_padded_batch"]["int8_max_abs_diff_logits"] = w8
        R["left_padded_batch"]["int8_greedy20_identical_rows"] = f"{same8}/{len(prompts)}"
        log(f"[verify] 4b. (info) INT8 padded batch vs single rows: max|diff| = {w8:.3e}; "
            f"identical greedy rows {same8}/{len(prompts)}")

    # 5. samples FP32 / INT8
    samples = []
    agree_tok, total_tok, exact = 0, 0, 0
    for msgs in SAMPLE_PROMPTS:
        p = enc(msgs)
        g32, _ = greedy_batch(sess, cfg, [p], 40, eos_ids, pad_id)
        ent = {"messages": msgs, "fp32": tok.decode(g32[0], skip_special_tokens=True),
               "fp32_ids": g32[0]}
        if sess8 is not None:
            g8, _ = greedy_batch(sess8, cfg, [p], 40, eos_ids, pad_id)
            ent["int8"] = tok.decode(g8[0], skip_special_tokens=True)
            ent["int8_ids"] = g8[0]
            n = max(len(g32[0]), len(g8[0]))
            a = sum(1 for x, y in zip(g32[0], g8[0]) if x == y)
            # positional agreement, counting up to the longer of the two
            agree_tok += a
            total_tok += n
            exact += int(g32[0] == g8[0])
        samples.append(ent)
        log(f"[sample] {msgs[-1]['content']!r}\n   fp32: {ent['fp32']!r}"
            + (f"\n   int8: {ent['int8']!r}" if sess8 is not None else ""))
    R["samples"] = samples
    if sess8 is not None:
        R["int8_vs_fp32"] = {"token_agreement": agree_tok / max(total_tok, 1),
                             "identical_generations": f"{exact}/{len(SAMPLE_PROMPTS)}"}
        # logits error of INT8 on the prefill used in check 2
        l8, _ = ort_step(sess8, cfg, ids, am, pos, empty_past(cfg, 1))
        R["int8_vs_fp32"]["prefill_logits_max_abs_diff"] = float(np.abs(l8 - lo).max())
        R["int8_vs_fp32"]["prefill_argmax_agreement"] = float(
            (l8.argmax(-1) == lo.argmax(-1)).mean())
        log(f"[verify] 5. INT8 vs FP32: {R['int8_vs_fp32']}")

    # 6. (quality figure) greedy answer exact match on held-out single-turn prompts
    held = [c for c in report["_heldout"] if len(c) <= 3][:HELDOUT_EVAL]
    em = {}
    for tag, ss in (("fp32", sess), ("int8", sess8)):
        if ss is None:
            continue
        hits = 0
        for k in range(0, len(held), 16):
            grp = held[k:k + 16]
            outs, _ = greedy_batch(ss, cfg, [enc(c[:-1]) for c in grp], 48, eos_ids, pad_id)
            hits += sum(int(tok.decode(o, skip_special_tokens=True) == c[-1]["content"])
                        for o, c in zip(outs, grp))
        em[tag] = hits / len(held)
    R["heldout_answer_exact_match"] = {"n": len(held), **em}
    log(f"[verify] 6. held-out greedy answer exact match (n={len(held)}): {em}")


# --------------------------------------------------------------------------
# FP16 variant (converted from the FP32 file, no retraining)
# --------------------------------------------------------------------------

# Limits for FP16 vs FP32 / FP16 vs itself.  float16 has an 11-bit significand:
# one ulp is 0.0156 for logits between 16 and 32, which is where the top logits
# of this model are.
FP16_LOGITS_TOL = 0.06      # |FP16 - FP32| on logits (measured ~0.01)
FP16_PRESENT_TOL = 0.02     # |FP16 - FP32| on present key/values
FP16_SELF_TOL = 0.06        # FP16 incremental vs FP16 full, padded row vs alone
FP16_MIN_AGREEMENT = 0.9    # greedy sample token agreement with FP32 (trained model)


class FiniteCheck:
    """Wraps an InferenceSession; every run() fails the build if any output
    holds a NaN or an infinity, and counts what it checked."""

    def __init__(self, sess, tag):
        self.sess, self.tag, self.runs, self.values = sess, tag, 0, 0

    def get_inputs(self):
        return self.sess.get_inputs()

    def get_outputs(self):
        return self.sess.get_outputs()

    def run(self, names, feeds):
        outs = self.sess.run(names, feeds)
        for n, o in zip(names or [x.name for x in self.sess.get_outputs()], outs):
            if np.issubdtype(o.dtype, np.floating) and not np.isfinite(o).all():
                fail(f"{self.tag}: output {n} has {int((~np.isfinite(o)).sum())} non-finite "
                     f"values (shape {o.shape})")
            self.values += o.size
        self.runs += 1
        return outs


def f32(x):
    return np.asarray(x, np.float32)


def verify_fp16(cfg, tok, fp32_path: Path, fp16_path: Path, R: dict, heldout,
                trained: bool):
    import onnx
    import onnxruntime as ort

    eos_ids = {tok.token_to_id(tb.IM_END), tok.token_to_id(tb.ENDOFTEXT)}
    pad_id = tok.token_to_id(tb.ENDOFTEXT)
    V = cfg["vocab_size"]
    L = cfg["num_hidden_layers"]
    f16 = np.float16

    def enc(msgs):
        return tok.encode(tb.render_chat(msgs, True), add_special_tokens=False).ids

    # 1. checker, load, names and order as FP32, dtypes as an Optimum FP16 export
    onnx.checker.check_model(str(fp16_path), full_check=True)
    raw32, raw16 = ort_session(fp32_path), ort_session(fp16_path)
    s32, s16 = FiniteCheck(raw32, "fp32"), FiniteCheck(raw16, "fp16")
    for what in ("get_inputs", "get_outputs"):
        n32 = [x.name for x in getattr(raw32, what)()]
        n16 = [x.name for x in getattr(raw16, what)()]
        if n16 != n32:
            fail(f"FP16 {what[4:]} {n16} differ from FP32 {n32}")
    types = {x.name: x.type for x in raw16.get_inputs() + raw16.get_outputs()}
    for name, t in types.items():
        want = ("tensor(int64)" if name in ("input_ids", "attention_mask", "position_ids")
                else "tensor(float16)")
        if t != want:
            fail(f"FP16 {name} is {t}, expected {want}")
    R["check_model_and_ort_load"] = "ok"
    R["io_types"] = {"input_ids/attention_mask/position_ids": "int64",
                     "past_key_values.*/present.*/logits": "float16"}
    log("[fp16] 1. onnx.checker + ORT load: ok; names/order as FP32; "
        "past/present/logits float16, ids/mask/positions int64")

    # 2. prefill vs FP32
    prompt = enc(SAMPLE_PROMPTS[1])
    S = len(prompt)
    ids, am, pos = np.array([prompt], np.int64), np.ones((1, S), np.int64), np.arange(S)[None]
    l32, p32 = ort_step(s32, cfg, ids, am, pos, empty_past(cfg, 1))
    l16, p16 = ort_step(s16, cfg, ids, am, pos, empty_past(cfg, 1, f16))
    if l16.dtype != f16 or l16.shape != (1, S, V):
        fail(f"FP16 logits {l16.dtype} {l16.shape}")
    d = float(np.abs(f32(l16) - l32).max())
    dk = max(float(np.abs(f32(p16[k]) - p32[k]).max()) for k in p32)
    am_agree = float((l16.argmax(-1) == l32.argmax(-1)).mean())
    R["prefill_vs_fp32"] = {"tokens": S, "logits_max_abs_diff": d,
                            "fp32_logits_max_abs": float(np.abs(l32).max()),
                            "present_max_abs_diff": dk, "argmax_agreement": am_agree}
    log(f"[fp16] 2. prefill (S={S}) vs FP32: logits max|diff| = {d:.3e} (FP32 max|logit| "
        f"{np.abs(l32).max():.1f}), present max|diff| = {dk:.3e}, argmax agreement {am_agree:.3f}")
    if d > FP16_LOGITS_TOL or dk > FP16_PRESENT_TOL or am_agree < 1.0:
        fail(f"FP16 prefill differs from FP32: logits {d}, present {dk}, argmax {am_agree}")

    # 3. incremental decoding (5-token prefill + single steps) vs one full forward
    gen, _ = greedy_fixed(s16, cfg, [prompt], 16, pad_id)
    full = prompt + gen[0]
    T = len(full)
    lf, pf = ort_step(s16, cfg, np.array([full]), np.ones((1, T), np.int64), np.arange(T)[None],
                      empty_past(cfg, 1, f16))
    k0 = 5
    li, past = ort_step(s16, cfg, np.array([full[:k0]]), np.ones((1, k0), np.int64),
                        np.arange(k0)[None], empty_past(cfg, 1, f16))
    chunks = [li]
    for t in range(k0, T):
        l1, past = ort_step(s16, cfg, np.array([[full[t]]]), np.ones((1, t + 1), np.int64),
                            np.array([[t]]), past)
        chunks.append(l1)
    linc = f32(np.concatenate(chunks, axis=1))
    d_inc = float(np.abs(linc - f32(lf)).max())
    d_kv = max(float(np.abs(f32(past[k]) - f32(pf[k])).max()) for k in pf)
    lf32, _ = ort_step(s32, cfg, np.array([full]), np.ones((1, T), np.int64), np.arange(T)[None],
                       empty_past(cfg, 1))
    d_inc32 = float(np.abs(linc - lf32).max())
    pshape, pdt = past["past_key_values.0.key"].shape, past["past_key_values.0.key"].dtype
    R["incremental_vs_full"] = {"prefill": k0, "steps": T - k0,
                                "logits_max_abs_diff": d_inc, "present_max_abs_diff": d_kv,
                                "vs_fp32_full_logits_max_abs_diff": d_inc32,
                                "final_present": f"{list(pshape)} {pdt}"}
    log(f"[fp16] 3. incremental ({k0}-token prefill + {T - k0} single steps, float16 past) vs "
        f"full forward: logits max|diff| = {d_inc:.3e}, present max|diff| = {d_kv:.3e} "
        f"(vs FP32 full {d_inc32:.3e}); present {list(pshape)} {pdt}")
    if (d_inc > FP16_SELF_TOL or d_kv > FP16_PRESENT_TOL or d_inc32 > FP16_LOGITS_TOL
            or pshape != (1, cfg["num_key_value_heads"], T, cfg["head_dim"]) or pdt != f16):
        fail(f"FP16 incremental decoding mismatch {d_inc} / {d_kv} / {d_inc32} {pshape} {pdt}")

    # 4. left-padded batch of 3 prompts vs each alone (20 greedy tokens)
    prompts = [enc(SAMPLE_PROMPTS[0]), enc(SAMPLE_PROMPTS[6]), enc(SAMPLE_PROMPTS[8])]
    lens = [len(p) for p in prompts]
    if len(set(lens)) != 3:
        fail(f"padded-batch prompts should have different lengths: {lens}")
    bgen, bpre = greedy_fixed(s16, cfg, prompts, 20, pad_id)
    Smax = max(lens)
    worst, same, pad_rows = 0.0, True, 0
    for r, p in enumerate(prompts):
        sgen, spre = greedy_fixed(s16, cfg, [p], 20, pad_id)
        worst = max(worst, float(np.abs(f32(bpre[r, Smax - len(p):]) - f32(spre[0])).max()))
        same &= (sgen[0] == bgen[r])
        pad_rows += Smax - len(p)
    R["left_padded_batch"] = {"prompt_lengths": lens, "padding_query_rows": pad_rows,
                              "max_abs_diff_logits": worst, "greedy20_identical": bool(same)}
    log(f"[fp16] 4. left-padded batch lengths {lens} ({pad_rows} fully masked padding query "
        f"rows, finite): per-row prefill logits max|diff| = {worst:.3e}; 20-token greedy "
        f"identical: {same}")
    if worst > FP16_SELF_TOL or not same:
        fail("FP16 left-padded batch differs from single-row runs")

    # 5. greedy samples FP16 vs FP32
    samples, agree_tok, total_tok, exact = [], 0, 0, 0
    for msgs in SAMPLE_PROMPTS:
        p = enc(msgs)
        g32, _ = greedy_batch(s32, cfg, [p], 40, eos_ids, pad_id)
        g16, _ = greedy_batch(s16, cfg, [p], 40, eos_ids, pad_id)
        agree_tok += sum(1 for x, y in zip(g32[0], g16[0]) if x == y)
        total_tok += max(len(g32[0]), len(g16[0]))
        exact += int(g32[0] == g16[0])
        ent = {"messages": msgs, "fp32": tok.decode(g32[0], skip_special_tokens=True),
               "fp16": tok.decode(g16[0], skip_special_tokens=True), "fp16_ids": g16[0],
               "identical": g32[0] == g16[0]}
        samples.append(ent)
        log(f"[fp16 sample] {msgs[-1]['content']!r}\n   fp32: {ent['fp32']!r}\n   "
            f"fp16: {ent['fp16']!r}")
    agreement = agree_tok / max(total_tok, 1)
    R["samples"] = samples
    R["samples_vs_fp32"] = {"token_agreement": agreement,
                            "identical_generations": f"{exact}/{len(SAMPLE_PROMPTS)}"}
    log(f"[fp16] 5. greedy samples vs FP32: token agreement {agreement:.3f}, identical "
        f"{exact}/{len(SAMPLE_PROMPTS)}")
    if trained and agreement < FP16_MIN_AGREEMENT:
        fail(f"FP16 greedy samples agree with FP32 on only {agreement:.3f} of tokens")

    # 6. the same FP16 file with ONNX Runtime's graph optimizations off (r1-edge
    #    lets the operator choose the level): same prefill, no NaN
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s16n = FiniteCheck(ort.InferenceSession(str(fp16_path), so,
                                            providers=["CPUExecutionProvider"]), "fp16-noopt")
    l16n, _ = ort_step(s16n, cfg, ids, am, pos, empty_past(cfg, 1, f16))
    bgen_n, _ = greedy_fixed(s16n, cfg, prompts, 20, pad_id)
    d_noopt = float(np.abs(f32(l16n) - f32(l16)).max())
    R["graph_optimizations_disabled"] = {"prefill_logits_max_abs_diff_vs_enabled": d_noopt,
                                         "padded_batch_greedy20_identical": bgen_n == bgen}
    log(f"[fp16] 6. ORT_DISABLE_ALL vs default optimizations: prefill logits max|diff| = "
        f"{d_noopt:.3e}; padded-batch greedy identical: {bgen_n == bgen}")
    if d_noopt > FP16_SELF_TOL or bgen_n != bgen:
        fail("FP16 model differs with graph optimizations disabled")

    # 7. full context: 2 rows of max_position_embeddings seeded random tokens, the
    #    second left-padded by a third (prefill, no generation): finite, close to FP32
    T = cfg["max_position_embeddings"]
    rids = np.random.default_rng(SEED).integers(3, V, (2, T))
    ram = np.ones((2, T), np.int64)
    ram[1, :T // 3] = 0
    rpos = np.clip(np.cumsum(ram, axis=1) - 1, 0, None)
    r32, rp32 = ort_step(s32, cfg, rids, ram, rpos, empty_past(cfg, 2))
    r16, rp16 = ort_step(s16, cfg, rids, ram, rpos, empty_past(cfg, 2, f16))
    d_long = float(np.abs(f32(r16) - r32).max())
    dk_long = max(float(np.abs(f32(rp16[k]) - rp32[k]).max()) for k in rp32)
    R["full_context_random_tokens"] = {
        "shape": [2, T], "left_padding_row1": T // 3, "logits_max_abs_diff": d_long,
        "present_max_abs_diff": dk_long,
        "argmax_agreement": float((r16.argmax(-1) == r32.argmax(-1)).mean())}
    log(f"[fp16] 7. {T}-token random-token prefill (batch 2, row 1 left-padded by {T // 3}) "
        f"vs FP32: logits max|diff| = {d_long:.3e}, present max|diff| = {dk_long:.3e}, "
        f"argmax agreement {R['full_context_random_tokens']['argmax_agreement']:.4f}")
    if d_long > FP16_LOGITS_TOL or dk_long > FP16_LOGITS_TOL:
        fail(f"FP16 full-context prefill differs from FP32: {d_long} / {dk_long}")

    # 8. (quality figure) held-out greedy answer exact match, FP16 and FP32
    held = [c for c in heldout if len(c) <= 3][:HELDOUT_EVAL]
    em, outs_by = {}, {}
    for tag, ss in (("fp32", s32), ("fp16", s16)):
        hits, outs_all = 0, []
        for k in range(0, len(held), 16):
            grp = held[k:k + 16]
            outs, _ = greedy_batch(ss, cfg, [enc(c[:-1]) for c in grp], 48, eos_ids, pad_id)
            outs_all += outs
            hits += sum(int(tok.decode(o, skip_special_tokens=True) == c[-1]["content"])
                        for o, c in zip(outs, grp))
        em[tag] = hits / len(held)
        outs_by[tag] = outs_all
    same_out = sum(int(a == b) for a, b in zip(outs_by["fp32"], outs_by["fp16"]))
    R["heldout_answer_exact_match"] = {"n": len(held), **em,
                                       "fp16_identical_to_fp32": f"{same_out}/{len(held)}"}
    log(f"[fp16] 8. held-out greedy answer exact match (n={len(held)}): {em}; FP16 generation "
        f"identical to FP32 for {same_out}/{len(held)}")
    R["finite_check"] = {"fp16_runs": s16.runs + s16n.runs,
                         "fp16_values": s16.values + s16n.values,
                         "fp32_runs": s32.runs, "non_finite": 0}
    log(f"[fp16] no NaN/inf in {s16.runs + s16n.runs} FP16 runs "
        f"({s16.values + s16n.values:,} values) and {s32.runs} FP32 runs")


def build_fp16(cfg, tok, heldout, trained: bool, report: dict) -> None:
    """Converts OUT_FP32/model.onnx to OUT_FP16/model.onnx, copies the four JSON
    files (config.json with torch_dtype float16), verifies, fills report["fp16"]."""
    import onnx

    import fp16_convert

    t0 = time.time()
    src = OUT_FP32 / "model.onnx"
    m16, info = fp16_convert.convert(onnx.load(str(src)))
    data = m16.SerializeToString()
    again, _ = fp16_convert.convert(onnx.load(str(src)))
    if again.SerializeToString() != data:
        fail("FP16 conversion is not deterministic")
    # Verified under a temporary name; model.onnx and the JSON files are only
    # replaced once every check has passed.
    tmp = OUT_FP16 / f".model.onnx.unverified-{os.getpid()}"
    write_atomic(tmp, data)
    R = report["fp16"] = {"source": f"{OUT_FP32.name}/model.onnx",
                          "source_sha256": sha256(src), "conversion": info}
    log(f"[fp16] converted ({len(data):,} bytes; {info['nodes']} nodes, "
        f"{info['casts']} Casts; tidy: {info['round_trips_removed']} fp32->fp16->fp32 round "
        f"trips and {info['duplicate_casts_merged']} duplicate Casts removed)")
    try:
        verify_fp16(cfg, tok, src, tmp, R.setdefault("verification", {}), heldout, trained)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, OUT_FP16 / "model.onnx")
    for name in SIDE_FILE_NAMES:
        b = (OUT_FP32 / name).read_bytes()
        if name == "config.json":
            cj = json.loads(b)
            cj["torch_dtype"] = "float16"
            b = json_bytes(cj)
        write_atomic(OUT_FP16 / name, b)
    log(f"[fp16] wrote {OUT_FP16}")
    R["seconds"] = round(time.time() - t0, 1)


def file_entries(dirs) -> dict:
    files = {}
    for d in dirs:
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                files[f"{d.name}/{f.name}"] = {"bytes": f.stat().st_size, "sha256": sha256(f)}
    return files


def fp16_only(args) -> None:
    """--fp16-only: no training; the committed FP32 model and its JSON files are the
    input.  Updates report.json in place (its "fp16" entry and the fp16 files)."""
    from tokenizers import Tokenizer

    t_start = time.time()
    cj = json.loads((OUT_FP32 / "config.json").read_text("utf-8"))
    cfg = dict(ARCH)
    cfg["vocab_size"] = cj["vocab_size"]
    for k in ("hidden_size", "num_hidden_layers", "num_key_value_heads", "head_dim"):
        if cj[k] != cfg[k]:
            fail(f"config.json {k}={cj[k]} differs from ARCH {cfg[k]}")
    tok = Tokenizer.from_file(str(OUT_FP32 / "tokenizer.json"))
    report = json.loads(REPORT.read_text("utf-8")) if REPORT.exists() else {}
    trained = (report.get("args") or {}).get("steps", 1) > 0
    heldout = corpus_mod.make_corpus(N_TRAIN + N_HELDOUT, SEED)[N_TRAIN:]
    build_fp16(cfg, tok, heldout, trained, report)
    files = report.get("files", {})
    files = {k: v for k, v in files.items() if not k.startswith(OUT_FP16.name + "/")}
    files.update(file_entries([OUT_FP16]))
    report["files"] = files
    report["fp16"]["made_by"] = "make_model.py --fp16-only"
    write_atomic(REPORT, json_bytes(report))
    for k, v in file_entries([OUT_FP16]).items():
        log(f"  {v['bytes']:>9}  {v['sha256'][:16]}  {k}")
    log(f"[done] fp16 only, {time.time() - t_start:.1f}s")


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--no-fp16", action="store_true")
    ap.add_argument("--fp16-only", action="store_true",
                    help="no training: convert the existing r1-edge-mini/model.onnx to "
                         "r1-edge-mini-fp16/, verify it, update report.json")
    ap.add_argument("--out-root", default=None,
                    help="write r1-edge-mini{,-int8,-fp16}/ and report.json under this "
                         "directory instead of models/ (used for reproducibility checks)")
    args = ap.parse_args()
    if args.out_root:
        global OUT_FP32, OUT_INT8, OUT_FP16, REPORT
        root = Path(args.out_root).resolve()
        OUT_FP32, OUT_INT8, OUT_FP16, REPORT = (
            root / "r1-edge-mini", root / "r1-edge-mini-int8", root / "r1-edge-mini-fp16",
            root / "report.json")
    if args.fp16_only:
        fp16_only(args)
        return

    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    t_start = time.time()
    report = {"args": vars(args)}

    # ---- corpus
    convs = corpus_mod.make_corpus(N_TRAIN + N_HELDOUT, SEED)
    train_c, held_c = convs[:N_TRAIN], convs[N_TRAIN:]
    tb.check_template_engines(convs[:50])
    log(f"[corpus] {len(train_c)} train / {len(held_c)} held-out conversations")

    # ---- tokenizer (trained on the training conversations only)
    # At encode time the special tokens are cut out first and each piece between
    # them is pre-tokenized on its own, so train on exactly those pieces.
    def pieces(s):
        for t in tb.SPECIAL_TOKENS:
            s = s.replace(t, "\0")
        return [x for x in s.split("\0") if x]

    texts = [x for c in train_c for x in pieces(tb.render_chat(c, False))]
    tok = tb.train_tokenizer(texts, VOCAB_TARGET)
    V = tok.get_vocab_size(with_added_tokens=True)
    log(f"[tokenizer] vocab size {V}")

    cfg = dict(ARCH)
    cfg["vocab_size"] = V

    train_seqs = build_data(tok, train_c)
    held_seqs = build_data(tok, held_c)
    ntok = sum(len(s[0]) for s in train_seqs)
    nsup = sum(sum(s[1]) for s in train_seqs)
    log(f"[data] train tokens {ntok} (supervised {nsup}), max len "
        f"{max(len(s[0]) for s in train_seqs + held_seqs)}")
    report["corpus"] = {"train_conversations": len(train_c), "heldout_conversations": len(held_c),
                        "train_tokens": ntok, "supervised_train_tokens": nsup,
                        "vocab_size": V}

    # ---- model
    from model_jax import count_params, init_params

    params = init_params(cfg, SEED)
    nparam = count_params(params)
    log(f"[model] {nparam} parameters")
    report["parameters"] = nparam

    params, tr = train(params, cfg, train_seqs, held_seqs, args.steps, args.batch_size, args.lr)
    report["training"] = tr
    log(f"[train] {tr['steps']} steps in {tr['train_seconds']}s; train loss {tr['train_loss']}; "
        f"held-out loss {tr['heldout_loss']:.4f}")

    # ---- export
    from onnx_export import build_model

    model = build_model(params, cfg)
    eos = tok.token_to_id(tb.IM_END)
    eot = tok.token_to_id(tb.ENDOFTEXT)
    config_json = {
        "architectures": ["Qwen2ForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": eot,
        "eos_token_id": eos,
        "head_dim": cfg["head_dim"],
        "hidden_act": "silu",
        "hidden_size": cfg["hidden_size"],
        "initializer_range": 0.02,
        "intermediate_size": cfg["intermediate_size"],
        "max_position_embeddings": cfg["max_position_embeddings"],
        "max_window_layers": cfg["num_hidden_layers"],
        "model_type": "qwen2",
        "num_attention_heads": cfg["num_attention_heads"],
        "num_hidden_layers": cfg["num_hidden_layers"],
        "num_key_value_heads": cfg["num_key_value_heads"],
        "rms_norm_eps": cfg["rms_norm_eps"],
        "rope_scaling": None,
        "rope_theta": cfg["rope_theta"],
        "sliding_window": None,
        "tie_word_embeddings": cfg["tie_word_embeddings"],
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": V,
    }
    gen_json = {
        "bos_token_id": eot,
        "do_sample": True,
        "eos_token_id": [eos, eot],
        "pad_token_id": eot,
        "repetition_penalty": 1.0,
        "temperature": 0.7,
        "top_k": 20,
        "top_p": 0.8,
    }
    tok_cfg = tb.tokenizer_config(cfg["max_position_embeddings"])
    tok_json = tok.to_str(pretty=True).encode("utf-8") + b"\n"

    side_files = {
        "config.json": json_bytes(config_json),
        "generation_config.json": json_bytes(gen_json),
        "tokenizer.json": tok_json,
        "tokenizer_config.json": json_bytes(tok_cfg),
    }
    # model.onnx first, then the small files (each atomically).
    write_atomic(OUT_FP32 / "model.onnx", model.SerializeToString())
    for name, data in side_files.items():
        write_atomic(OUT_FP32 / name, data)
    log(f"[export] wrote {OUT_FP32}")

    # check that the saved tokenizer.json reloads to the same ids
    from tokenizers import Tokenizer

    tok2 = Tokenizer.from_file(str(OUT_FP32 / "tokenizer.json"))
    for c in train_c[:200]:
        s = tb.render_chat(c, True)
        if tok2.encode(s, add_special_tokens=False).ids != tok.encode(
                s, add_special_tokens=False).ids:
            fail("tokenizer.json reload gives different ids")
        if tok2.decode(tok2.encode(s).ids, skip_special_tokens=False) != s:
            fail("tokenizer round trip is not lossless")

    int8_path = None
    if not args.no_int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        OUT_INT8.mkdir(parents=True, exist_ok=True)
        tmp = OUT_INT8 / f".model.onnx.tmp-{os.getpid()}"
        quantize_dynamic(str(OUT_FP32 / "model.onnx"), str(tmp), weight_type=QuantType.QInt8,
                         per_channel=False, reduce_range=False,
                         extra_options={"MatMulConstBOnly": True})
        os.replace(tmp, OUT_INT8 / "model.onnx")
        for name, data in side_files.items():
            write_atomic(OUT_INT8 / name, data)
        int8_path = OUT_INT8 / "model.onnx"
        log(f"[quantize] wrote {OUT_INT8}")

    report["_heldout"] = held_c
    verify(cfg, params, tok, OUT_FP32 / "model.onnx", int8_path, report)
    del report["_heldout"]

    if not args.no_fp16:
        build_fp16(cfg, tok, held_c, args.steps > 0, report)

    files = file_entries([OUT_FP32] + ([OUT_INT8] if int8_path else [])
                         + ([] if args.no_fp16 else [OUT_FP16]))
    report["files"] = files
    report["total_seconds"] = round(time.time() - t_start, 1)
    write_atomic(REPORT, json_bytes(report))
    for k, v in files.items():
        log(f"  {v['bytes']:>9}  {v['sha256'][:16]}  {k}")
    log(f"[done] {report['total_seconds']}s")


if __name__ == "__main__":
    main()
