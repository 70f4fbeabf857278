"""The Python peer of edge-node/benches/decode.rs: the same model and prompts, a plain onnxruntime
generation loop with KV cache (left-padded prefill, then one token per row per step, greedy).

    python scripts/bench/python_decode.py --model models/r1-edge-mini --prompts /tmp/prompts.json

Prints Markdown rows like the Rust bench: median tokens/s over the decode steps, ms per step;
`--jsonl FILE` also appends one JSON record per (model, batch) with every repeat and the resident memory.
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime as ort


def proc_mib(field: str) -> float:
    """A field of /proc/self/status in MiB (VmRSS: resident now, VmHWM: the peak)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--prompts", required=True, help="token ids written by the Rust bench (--dump-prompts)")
    p.add_argument("--batches", default="1,4,8,16,32")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jsonl", help="append one JSON record per (model, batch) to this file")
    a = p.parse_args()
    prompts = json.load(open(a.prompts))
    for model_dir in a.model:
        name = model_dir.rstrip("/").split("/")[-1]
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = a.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(f"{model_dir}/model.onnx", opts, providers=["CPUExecutionProvider"])
        past_inputs = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
        heads, head_dim = past_inputs[0].shape[1], past_inputs[0].shape[3]
        if not isinstance(heads, int) or not isinstance(head_dim, int):
            config = json.load(open(f"{model_dir}/config.json"))
            heads = config["num_key_value_heads"]
            head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        past_dtype = DTYPES[past_inputs[0].type]
        rss_load = proc_mib("VmRSS")
        output_names = [o.name for o in sess.get_outputs()]
        presents = [n for n in output_names if n.startswith("present.")]
        # A first pass at batch 1, two steps, not recorded: ONNX Runtime's first runs allocate.
        for batch, steps, repeats in [(1, 2, 1)] + [(int(b), a.steps, a.repeats) for b in a.batches.split(",")]:
            warm = steps != a.steps or repeats != a.repeats
            rows = [prompts[i % len(prompts)] for i in range(batch)]
            rates, step_ms = [], []
            load = loadavg()
            for _ in range(repeats):
                length = max(len(r) for r in rows)
                ids = np.zeros((batch, length), dtype=np.int64)
                mask = np.zeros((batch, length), dtype=np.int64)
                pos = np.zeros((batch, length), dtype=np.int64)
                for i, r in enumerate(rows):
                    ids[i, length - len(r):] = r
                    mask[i, length - len(r):] = 1
                    pos[i, length - len(r):] = np.arange(len(r))
                feed = {"input_ids": ids, "attention_mask": mask, "position_ids": pos}
                for inp in past_inputs:
                    feed[inp.name] = np.zeros((batch, heads, 0, head_dim), dtype=past_dtype)
                out = dict(zip(output_names, sess.run(output_names, feed)))
                tokens = out["logits"][:, -1, :].argmax(-1)
                positions = np.array([len(r) for r in rows], dtype=np.int64)
                started = time.perf_counter()
                for _ in range(steps):
                    mask = np.concatenate([mask, np.ones((batch, 1), dtype=np.int64)], axis=1)
                    feed = {
                        "input_ids": tokens.reshape(batch, 1).astype(np.int64),
                        "attention_mask": mask,
                        "position_ids": positions.reshape(batch, 1),
                    }
                    for n in presents:
                        feed[n.replace("present.", "past_key_values.")] = out[n]
                    out = dict(zip(output_names, sess.run(output_names, feed)))
                    tokens = out["logits"][:, -1, :].argmax(-1)
                    positions = positions + 1
                secs = time.perf_counter() - started
                rates.append(batch * steps / secs)
                step_ms.append(secs * 1000 / steps)
            if warm:
                continue
            if a.jsonl:
                record = {
                    "tool": "python-ort", "path": "loop", "label": name, "batch": batch, "steps": a.steps,
                    "threads": a.threads, "rates": rates, "tok_s": statistics.median(rates),
                    "ms_step": statistics.median(step_ms), "load": load,
                    "memory": {"rss_load_mib": rss_load, "rss_decode_end_mib": proc_mib("VmRSS"), "hwm_mib": proc_mib("VmHWM")},
                }
                with open(a.jsonl, "a") as f:
                    f.write(json.dumps(record) + "\n")
            print(f"| {name} | python onnxruntime | {batch} | {statistics.median(rates):.0f} | {statistics.median(step_ms):.2f} |")


if __name__ == "__main__":
    main()
