#!/usr/bin/env python3
"""Builds r1-edge-mini end to end: corpus -> tokenizer -> JAX training ->
hand-built ONNX export (Optimum Qwen2 with-past layout) -> verification ->
INT8 dynamic quantization -> verification.

    python make_model.py                 # full build (what make.sh runs)
    python make_model.py --steps 0       # untrained (random weights), same interface

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


def empty_past(cfg, B):
    return {f"past_key_values.{i}.{kv}": np.zeros((B, cfg["num_key_value_heads"], 0,
                                                    cfg["head_dim"]), np.float32)
            for i in range(cfg["num_hidden_layers"]) for kv in ("key", "value")}


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
    logits, past = ort_step(sess, cfg, ids, am, pos, empty_past(cfg, B))
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
# main
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3200)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--out-root", default=None,
                    help="write r1-edge-mini{,-int8}/ and report.json under this directory "
                         "instead of models/ (used for reproducibility checks)")
    args = ap.parse_args()
    if args.out_root:
        global OUT_FP32, OUT_INT8, REPORT
        root = Path(args.out_root).resolve()
        OUT_FP32, OUT_INT8, REPORT = (root / "r1-edge-mini", root / "r1-edge-mini-int8",
                                      root / "report.json")

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

    files = {}
    for d in (OUT_FP32, OUT_INT8) if int8_path else (OUT_FP32,):
        for f in sorted(d.iterdir()):
            if f.is_file() and not f.name.startswith("."):
                files[f"{d.name}/{f.name}"] = {"bytes": f.stat().st_size,
                                                     "sha256": sha256(f)}
    report["files"] = files
    report["total_seconds"] = round(time.time() - t_start, 1)
    write_atomic(REPORT, json_bytes(report))
    for k, v in files.items():
        log(f"  {v['bytes']:>9}  {v['sha256'][:16]}  {k}")
    log(f"[done] {report['total_seconds']}s")


if __name__ == "__main__":
    main()
