"""onnxruntime-genai's own generator on a model of its builder, as the peer of edge-node/benches/decode.rs:
the same prompts (token ids written by the Rust bench), the same thread count, greedy, a fixed number of
new tokens per row.

    python scripts/bench/genai_decode.py --model DIR --prompts /tmp/prompts.json --jsonl out.jsonl

A batch is one `Generator` with `batch_size` rows (its prompts padded into one block, as its batched API
takes them): on the CPU, onnxruntime-genai's continuous-batching `Engine` needs a paged-attention graph,
which its builder makes for CUDA only. Decode steps only: `append_tokens` runs the prefill, then each
`generate_next_token` picks a token per row and runs one step. `search.max_length` is set to what the run
needs (prompt + steps), or genai preallocates its shared KV buffer for the whole context per row.
"""

import argparse
import json
import statistics
import time

import numpy as np
import onnxruntime_genai as og


def proc_mib(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def loadavg() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--batches", default="1,4,8,16,32")
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--jsonl")
    a = p.parse_args()
    prompts = json.load(open(a.prompts))
    for model_dir in a.model:
        name = model_dir.rstrip("/").split("/")[-1]
        genai = json.load(open(f"{model_dir}/genai_config.json"))
        pad = genai["model"].get("pad_token_id", 0)
        pad = pad[0] if isinstance(pad, list) else pad
        longest = max(len(r) for r in prompts)
        max_length = longest + a.steps + 8
        config = og.Config(model_dir)
        config.overlay(json.dumps({
            "model": {"decoder": {"session_options": {"intra_op_num_threads": a.threads, "inter_op_num_threads": 1}}},
            "search": {"max_length": max_length, "do_sample": False},
        }))
        model = og.Model(config)
        rss_load = proc_mib("VmRSS")
        # A first pass at batch 1, two steps, not recorded: ONNX Runtime's first runs allocate.
        for batch, steps, repeats in [(1, 2, 1)] + [(int(b), a.steps, a.repeats) for b in a.batches.split(",")]:
            warm = steps != a.steps or repeats != a.repeats
            rows = [prompts[i % len(prompts)] for i in range(batch)]
            length = max(len(r) for r in rows)
            block = np.full((batch, length), pad, dtype=np.int32)
            for i, r in enumerate(rows):
                block[i, length - len(r):] = r  # left-padded, as its tokenizer's encode_batch pads
            rates, step_ms = [], []
            load = loadavg()
            rss_decode_end = 0.0
            for _ in range(repeats):
                params = og.GeneratorParams(model)
                # min_length = max_length: no row stops early on a (random) end-of-sequence token.
                total = length + steps + 1
                params.set_search_options(batch_size=batch, max_length=total, min_length=total, do_sample=False)
                generator = og.Generator(model, params)
                generator.append_tokens(block)
                generator.generate_next_token()  # the first token comes from the prefill's logits
                started = time.perf_counter()
                for _ in range(steps):
                    generator.generate_next_token()
                secs = time.perf_counter() - started
                rss_decode_end = proc_mib("VmRSS")
                del generator
                rates.append(batch * steps / secs)
                step_ms.append(secs * 1000 / steps)
            if warm:
                continue
            if a.jsonl:
                record = {
                    "tool": "onnxruntime-genai", "path": "generator", "label": name, "batch": batch,
                    "steps": a.steps, "threads": a.threads, "rates": rates, "tok_s": statistics.median(rates),
                    "ms_step": statistics.median(step_ms), "load": load,
                    "memory": {"rss_load_mib": rss_load, "rss_decode_end_mib": rss_decode_end, "hwm_mib": proc_mib("VmHWM")},
                }
                with open(a.jsonl, "a") as f:
                    f.write(json.dumps(record) + "\n")
            print(f"| {name} | onnxruntime-genai | {batch} | {statistics.median(rates):.0f} | {statistics.median(step_ms):.2f} |")


if __name__ == "__main__":
    main()
