"""What the two export layouts compute, checked with ONNX Runtime alone (no r1-edge).

1. The genai GroupQueryAttention graph and the Optimum graph of one checkpoint give the same logits
   (prefill and decode, batch 1).
2. The genai graph attends to each row's first sum(attention_mask) positions: left-padded rows go
   wrong, right-padded rows are right.
3. With past and present bound to one preallocated buffer (I/O binding), rows of different lengths
   decode together and match the Optimum graph run alone; the present ONNX Runtime returns is that
   buffer.
4. With --size full: one decode step of the full-size Qwen2.5-0.5B FP32 exports (from make.sh), the
   Optimum graph (Concat of past and new) against the genai graph on a shared buffer.

    ~/.cache/r1-hybrid/real-venv/bin/python models/build/real/probe_layouts.py [--size full]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("R1_CACHE_DIR", Path.home() / ".cache" / "r1-hybrid")) / "real-models"


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path / "model.onnx"), options, providers=["CPUExecutionProvider"])


class Graph:
    def __init__(self, path: Path, layers: int, kv_heads: int, head_dim: int):
        self.s = session(path)
        self.inputs = {i.name for i in self.s.get_inputs()}
        self.outputs = [o.name for o in self.s.get_outputs()]
        self.layers, self.kv_heads, self.head_dim = layers, kv_heads, head_dim

    def names(self):
        return [(f"past_key_values.{i}.{k}", f"present.{i}.{k}") for i in range(self.layers) for k in ("key", "value")]

    def run(self, ids, mask, positions=None, past=None):
        rows = ids.shape[0]
        feed = {"input_ids": ids, "attention_mask": mask}
        if "position_ids" in self.inputs:
            feed["position_ids"] = positions
        empty = np.zeros((rows, self.kv_heads, 0, self.head_dim), np.float32)
        for n, (p, _) in enumerate(self.names()):
            feed[p] = empty if past is None else past[n]
        out = dict(zip(self.outputs, self.s.run(None, feed)))
        return out["logits"], [out[q] for _, q in self.names()]


def bind_shared(g: Graph, buffers: list) -> ort.IOBinding:
    """Binds each buffer as both past_key_values.N.* and present.N.*, and logits to new memory."""
    binding = g.s.io_binding()
    for (past, present), buffer in zip(g.names(), buffers):
        binding.bind_ortvalue_input(past, buffer)
        binding.bind_ortvalue_output(present, buffer)
    binding.bind_output("logits")
    return binding


def alone(g: Graph, prompt: np.ndarray, steps: int) -> np.ndarray:
    n = len(prompt)
    logits, past = g.run(prompt[None], np.ones((1, n), np.int64), np.arange(n)[None])
    rows = [logits[0, -1]]
    for _ in range(steps):
        token = np.array([[rows[-1].argmax()]])
        logits, past = g.run(token, np.ones((1, n + 1), np.int64), np.array([[n]]), past)
        rows.append(logits[0, -1])
        n += 1
    return np.stack(rows)


def tiny() -> None:
    optimum = Graph(REPO / "models" / "qwen2-tiny-optimum", 2, 2, 16)
    genai = Graph(REPO / "models" / "qwen2-tiny-genai", 2, 2, 16)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 2048, n) for n in (7, 4, 11)]
    same = max(np.abs(alone(optimum, p, 8) - alone(genai, p, 8)).max() for p in prompts)
    print(f"1. genai vs Optimum graph, alone, prefill + 8 steps: max |logits diff| {same:.1e}")

    a, b = prompts[0], prompts[1]
    want = genai.run(b[None], np.ones((1, len(b)), np.int64))[0][0, -1]
    pad = len(a) - len(b)
    left = np.stack([a, np.concatenate([np.zeros(pad, np.int64), b])])
    left_mask = np.array([[1] * len(a), [0] * pad + [1] * len(b)])
    right = np.stack([a, np.concatenate([b, np.zeros(pad, np.int64)])])
    right_mask = np.array([[1] * len(a), [1] * len(b) + [0] * pad])
    got_left = genai.run(left, left_mask)[0][1, -1]
    got_right = genai.run(right, right_mask)[0][1, len(b) - 1]
    print(
        f"2. genai graph, row of {len(b)} beside {len(a)}: left-padded |diff| {np.abs(got_left - want).max():.2f}, "
        f"right-padded {np.abs(got_right - want).max():.1e}"
    )

    rows, longest, capacity = len(prompts), max(len(p) for p in prompts), 64
    ids = np.zeros((rows, longest), np.int64)
    mask = np.zeros((rows, longest), np.int64)
    for r, p in enumerate(prompts):
        ids[r, : len(p)], mask[r, : len(p)] = p, 1
    logits, present = genai.run(ids, mask)
    lens = [len(p) for p in prompts]
    out = [[logits[r, lens[r] - 1]] for r in range(rows)]
    buffers = []
    for tensor in present:
        full = np.zeros((rows, 2, capacity, 16), np.float32)
        full[:, :, :longest] = tensor
        buffers.append(ort.OrtValue.ortvalue_from_numpy(full))
    order = [q for _, q in genai.names()] + ["logits"]
    in_place = True
    for _ in range(8):
        # A binding per step: reusing one across runs from Python gave wrong logits here (r1-edge
        # reuses its binding, from Rust, and matches the Optimum graph token for token).
        binding = bind_shared(genai, buffers)
        total = max(lens) + 1
        step_mask = np.zeros((rows, total), np.int64)
        for r in range(rows):
            step_mask[r, : lens[r] + 1] = 1
        # bind_cpu_input binds the array's memory: keep it alive until the run.
        tokens = np.array([[o[-1].argmax()] for o in out])
        binding.bind_cpu_input("input_ids", tokens)
        binding.bind_cpu_input("attention_mask", step_mask)
        genai.s.run_with_iobinding(binding)
        values = binding.get_outputs()
        in_place &= values[0].data_ptr() == buffers[0].data_ptr()
        step = values[order.index("logits")].numpy()
        for r in range(rows):
            out[r].append(step[r, -1])
            lens[r] += 1
    worst = max(np.abs(np.stack(out[r]) - alone(optimum, p, 8)).max() for r, p in enumerate(prompts))
    print(
        f"3. shared buffer [3, 2, {capacity}, 16], rows of {[len(p) for p in prompts]} decoding together: "
        f"max |diff| vs Optimum alone {worst:.1e}; present is the buffer: {in_place}"
    )


def full(rows: int, cached: int, capacity: int, steps: int) -> None:
    optimum = Graph(CACHE / "qwen2.5-0.5b-instruct-optimum-fp32", 24, 2, 64)
    genai = Graph(CACHE / "qwen2.5-0.5b-instruct-genai-fp32", 24, 2, 64)
    rng = np.random.default_rng(0)
    past = [rng.standard_normal((rows, 2, cached, 64)).astype(np.float32) for _ in range(48)]
    buffers = []
    for tensor in past:
        full_buffer = np.zeros((rows, 2, capacity, 64), np.float32)
        full_buffer[:, :, :cached] = tensor
        buffers.append(ort.OrtValue.ortvalue_from_numpy(full_buffer))
    concat, shared = [], []
    n_o = n_g = cached
    ids = np.full((rows, 1), 5, np.int64)
    for _ in range(steps):
        started = time.perf_counter()
        _, past = optimum.run(ids, np.ones((rows, n_o + 1), np.int64), np.full((rows, 1), n_o), past)
        concat.append(time.perf_counter() - started)
        n_o += 1
        step_mask = np.ones((rows, n_g + 1), np.int64)  # kept alive until the run
        binding = bind_shared(genai, buffers)
        binding.bind_cpu_input("input_ids", ids)
        binding.bind_cpu_input("attention_mask", step_mask)
        started = time.perf_counter()
        genai.s.run_with_iobinding(binding)
        shared.append(time.perf_counter() - started)
        n_g += 1
    print(
        f"4. Qwen2.5-0.5B FP32, batch {rows}, {cached} cached positions, one thread, interleaved: "
        f"Optimum {1000 * np.median(concat[2:]):.0f} ms/step, genai on a shared buffer "
        f"{1000 * np.median(shared[2:]):.0f} ms/step"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--cached", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=8)
    args = parser.parse_args()
    tiny()
    if args.size == "full":
        full(args.rows, args.cached, 2 * args.cached, args.steps)


if __name__ == "__main__":
    main()
