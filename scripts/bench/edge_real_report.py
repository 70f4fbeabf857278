"""Markdown tables from the JSON records of scripts/bench-edge-real.sh (median over rounds).

    python scripts/bench/edge_real_report.py results.jsonl
"""

import json
import statistics
import sys
from collections import defaultdict


def main() -> None:
    records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
    rates = defaultdict(list)  # (label, tool, threads, batch) -> [tok/s per round]
    memory = {}
    loads = defaultdict(list)
    joins = []
    for r in records:
        if r["tool"] == "load":
            loads[r["label"]].append(f'{r["loadavg"]}{" busy" if r["busy_pids"].strip() else ""}')
        elif r.get("path") == "join":
            joins.append(r)
        else:
            tool = r["tool"] + (" (spin off)" if r.get("spin") is False else "")
            key = (r["label"], tool, r["threads"], r["batch"])
            rates[key].extend(r["rates"])
            memory[key] = r.get("memory") or {}
    med = {k: statistics.median(v) for k, v in rates.items()}
    batches = sorted({k[3] for k in med})
    configs = sorted({k[:3] for k in med})

    print("### Decode tokens/s (median over rounds; rounds in brackets)\n")
    print("| model | runtime | threads | " + " | ".join(f"b{b}" for b in batches) + " | b32/b1 |")
    print("|---|---|---:|" + "---:|" * len(batches) + "---:|")
    for label, tool, threads in configs:
        cells = []
        for b in batches:
            k = (label, tool, threads, b)
            cells.append(f"{med[k]:,.1f} ({', '.join(f'{x:.1f}' for x in rates[k])})" if k in med else "")
        b1, b32 = med.get((label, tool, threads, 1)), med.get((label, tool, threads, 32))
        ratio = f"{b32 / b1:.2f}×" if b1 and b32 else ""
        print(f"| {label} | {tool} | {threads} | " + " | ".join(cells) + f" | {ratio} |")

    print("\n### r1-edge (2 threads; spin-wait on where measured, else off) ÷ each other runtime or setting (ratio of medians, same model file, same batch)\n")
    print("| model | other | threads | " + " | ".join(f"b{b}" for b in batches) + " |")
    print("|---|---|---:|" + "---:|" * len(batches))
    for label, tool, threads in configs:
        if tool.startswith("r1-edge") and threads == 2 and ("spin" not in tool or (label, "r1-edge", 2) not in configs):
            continue
        cells = []
        for b in batches:
            mine = med.get((label, "r1-edge", 2, b)) or med.get((label, "r1-edge (spin off)", 2, b))
            theirs = med.get((label, tool, threads, b))
            cells.append(f"{mine / theirs:.2f}×" if mine and theirs else "")
        print(f"| {label} | {tool} | {threads} | " + " | ".join(cells) + " |")

    print("\n### Memory (last round): resident MiB after load / at the end of decode / peak; KV bytes per row\n")
    print("| model | runtime | batch | RSS load | RSS end | peak | KV/row (MiB) | formula (MiB) | positions | RSS growth during decode vs KV growth (MiB) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (label, tool, threads, b), m in sorted(memory.items()):
        if not m:
            continue
        kv = m.get("kv_end") or {}
        kv0 = m.get("kv_start") or {}
        growth = ""
        if kv and "rss_decode_start_mib" in m:
            growth = f'{m["rss_decode_end_mib"] - m["rss_decode_start_mib"]:.1f} vs {(kv["bytes"] - kv0["bytes"]) / 2**20:.1f}'
        print(
            f"| {label} | {tool} | {b} | {m.get('rss_load_mib', 0):,.0f} | {m.get('rss_decode_end_mib', 0):,.0f} | {m.get('hwm_mib', 0):,.0f} | "
            + (f"{kv['bytes_per_row'] / 2**20:.2f} | {kv['formula_per_row'] / 2**20:.2f} | {kv['capacity']} | " if kv else " | | | ")
            + f"{growth} |"
        )

    if joins:
        print("\n### A long prompt joining a decoding batch (r1-edge engine, whole-prompt prefill)\n")
        print("| model | prompt tokens | running rows | TTFT (ms) | running rows' gap at the join (ms) | gap before (ms) | gap after (ms) | load |")
        print("|---|---:|---:|---:|---:|---:|---:|---|")
        for j in joins:
            print(
                f"| {j['label']} | {j['prompt_tokens']} | {j['rows']} | {j['ttft_ms']:,.0f} | {j['join_gap_ms']:,.0f} | "
                f"{j['gap_before_ms']:.0f} | {j['gap_after_ms']:.0f} | {j['load']} |"
            )

    print("\n### Load before each run (1/5/15-minute load average; 'busy' = a test suite or compiler ran)\n")
    for label, values in loads.items():
        print(f"- {label}: {'; '.join(values)}")


if __name__ == "__main__":
    main()
