//! Decode throughput of r1-edge at several batch sizes, through the engine and through the batcher.
//!
//! ```sh
//! cargo bench -p r1-edge --bench decode -- --model models/r1-edge-mini --model models/r1-edge-mini-int8
//! ```
//! Options: `--batches 1,4,8,16,32`, `--steps 64`, `--repeats 3`, `--threads 2`,
//! `--dump-prompts FILE` (the token ids used, for `scripts/bench/python_decode.py`),
//! `--spin on|off` (ONNX Runtime's thread spin-wait; default: the config's), `--engine-only` (skip the batcher), `--jsonl FILE` (append one JSON record per measurement:
//! tokens/s of every repeat, resident memory, KV cache bytes against the formula),
//! `--join TOKENS` with `--join-rows 4` (a prompt of about TOKENS tokens joins `join-rows` decoding
//! rows, as the batcher does it: whole-prompt prefill, then merge; prints its time to first token and
//! the running rows' gaps between tokens).
//! Prints one Markdown row per (model, path, batch): median tokens/s and ms per decode step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark binary

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use r1_edge::batcher::{self, BatchSettings, Event, GenerationRequest};
use r1_edge::config::OrtSection;
use r1_edge::engine::KvBatch;
use r1_edge::metrics::EdgeMetrics;
use r1_edge::model::KvDtype;
use r1_edge::runtime::LibrarySearch;
use r1_edge::sampling::{Sampler, SamplingParams};
use r1_proto::ChatMessage;

#[path = "../tests/support/questions.rs"]
mod questions;
use questions::QUESTIONS;

struct Args {
    models: Vec<PathBuf>,
    batches: Vec<usize>,
    steps: usize,
    repeats: usize,
    threads: usize,
    spin: bool,
    dump_prompts: Option<PathBuf>,
    engine_only: bool,
    jsonl: Option<PathBuf>,
    join: Option<usize>,
    join_rows: usize,
}

fn args() -> Args {
    let mut args = Args {
        models: Vec::new(),
        batches: vec![1, 4, 8, 16, 32],
        steps: 64,
        repeats: 3,
        threads: 2,
        spin: OrtSection::default().spin,
        dump_prompts: None,
        engine_only: false,
        jsonl: None,
        join: None,
        join_rows: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--model" => args.models.push(it.next().unwrap().into()),
            "--batches" => args.batches = it.next().unwrap().split(',').map(|b| b.parse().unwrap()).collect(),
            "--steps" => args.steps = it.next().unwrap().parse().unwrap(),
            "--repeats" => args.repeats = it.next().unwrap().parse().unwrap(),
            "--threads" => args.threads = it.next().unwrap().parse().unwrap(),
            "--dump-prompts" => args.dump_prompts = Some(it.next().unwrap().into()),
            "--spin" => args.spin = it.next().unwrap() == "on",
            "--engine-only" => args.engine_only = true,
            "--jsonl" => args.jsonl = Some(it.next().unwrap().into()),
            "--join" => args.join = Some(it.next().unwrap().parse().unwrap()),
            "--join-rows" => args.join_rows = it.next().unwrap().parse().unwrap(),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    if args.models.is_empty() {
        args.models
            .push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models/r1-edge-mini"));
    }
    args
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A field of `/proc/self/status` in MiB (`VmRSS`: resident now, `VmHWM`: the peak).
fn proc_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn append_jsonl(path: Option<&Path>, record: serde_json::Value) {
    if let Some(path) = path {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(f, "{record}").unwrap();
    }
}

/// KV bytes of one row holding `positions` positions, by the formula
/// layers × KV heads × head size × 2 (key, value) × element size × positions.
fn kv_formula(spec: &r1_edge::model::ModelSpec, positions: usize) -> usize {
    let element = match spec.kv_dtype {
        KvDtype::F32 => 4,
        KvDtype::F16 => 2,
    };
    spec.layers * spec.kv_heads * spec.head_dim * 2 * element * positions
}

fn kv_record(kv: &KvBatch, spec: &r1_edge::model::ModelSpec) -> serde_json::Value {
    let rows = kv.rows().max(1);
    serde_json::json!({
        "rows": kv.rows(),
        "len": kv.len(),
        "capacity": kv.capacity(),
        "bytes": kv.cache_bytes(),
        "bytes_per_row": kv.cache_bytes() / rows,
        "formula_per_row": kv_formula(spec, kv.capacity()),
    })
}

fn main() {
    let args = args();
    let ort = OrtSection {
        intra_threads: args.threads,
        spin: args.spin,
        ..OrtSection::default()
    };
    println!(
        "| model | path | batch | tokens/s (median of {}) | ms/step |",
        args.repeats
    );
    println!("|---|---|---:|---:|---:|");
    for dir in &args.models {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut model = r1_edge::model::load(&LibrarySearch::from_env(), dir, &ort).unwrap();
        let prompts: Vec<Vec<u32>> = QUESTIONS
            .iter()
            .map(|q| {
                model
                    .text
                    .encode(&model.text.render_chat(&[ChatMessage::user(*q)]).unwrap())
                    .unwrap()
            })
            .collect();
        if let Some(path) = &args.dump_prompts {
            std::fs::write(path, serde_json::to_vec(&prompts).unwrap()).unwrap();
        }

        // Engine: prefill once, then `steps` decode steps with greedy sampling (decode time only).
        let label = name.clone();
        let rss_load = proc_mib("VmRSS");
        // One short warm-up, so the first measured batch does not pay ONNX Runtime's first-run costs.
        {
            let (mut kv, logits) = model.engine.prefill(&[prompts[0].as_slice()]).unwrap();
            let mut t = Sampler::new(SamplingParams::GREEDY).sample(logits.row(0)).token;
            let start = prompts[0].len() as i64;
            for p in start..start + 2 {
                let l = model.engine.decode(&mut kv, &[t], &[p]).unwrap();
                t = Sampler::new(SamplingParams::GREEDY).sample(l.row(0)).token;
            }
        }
        for &batch in &args.batches {
            let load = loadavg();
            let rows: Vec<&[u32]> = (0..batch).map(|i| prompts[i % prompts.len()].as_slice()).collect();
            let mut rates = Vec::new();
            let mut step_ms = Vec::new();
            let mut model_share = Vec::new();
            let mut memory = serde_json::Value::Null;
            for repeat in 0..args.repeats {
                let rss_before = proc_mib("VmRSS");
                let (mut kv, logits) = model.engine.prefill(&rows).unwrap();
                let mut sampler = Sampler::new(SamplingParams::GREEDY);
                let mut tokens: Vec<u32> = (0..batch).map(|r| sampler.sample(logits.row(r)).token).collect();
                let mut positions: Vec<i64> = rows.iter().map(|p| p.len() as i64).collect();
                drop(logits);
                // The first step moves a shared-layout prefill into its growable buffer: count from after it.
                let logits = model.engine.decode(&mut kv, &tokens, &positions).unwrap();
                for (r, t) in tokens.iter_mut().enumerate() {
                    *t = sampler.sample(logits.row(r)).token;
                }
                for p in &mut positions {
                    *p += 1;
                }
                let kv_start = kv_record(&kv, model.engine.spec());
                let rss_start = proc_mib("VmRSS");
                let started = Instant::now();
                let mut in_model = Duration::ZERO;
                for _ in 0..args.steps {
                    let t0 = Instant::now();
                    let logits = model.engine.decode(&mut kv, &tokens, &positions).unwrap();
                    in_model += t0.elapsed();
                    for (r, t) in tokens.iter_mut().enumerate() {
                        *t = sampler.sample(logits.row(r)).token;
                    }
                    for p in &mut positions {
                        *p += 1;
                    }
                }
                let secs = started.elapsed().as_secs_f64();
                model_share.push(in_model.as_secs_f64() / secs);
                rates.push((batch * args.steps) as f64 / secs);
                step_ms.push(secs * 1000.0 / args.steps as f64);
                if repeat + 1 == args.repeats {
                    memory = serde_json::json!({
                        "rss_load_mib": rss_load,
                        "rss_before_prefill_mib": rss_before,
                        "rss_decode_start_mib": rss_start,
                        "rss_decode_end_mib": proc_mib("VmRSS"),
                        "hwm_mib": proc_mib("VmHWM"),
                        "kv_start": kv_start,
                        "kv_end": kv_record(&kv, model.engine.spec()),
                    });
                }
            }
            append_jsonl(
                args.jsonl.as_deref(),
                serde_json::json!({
                    "tool": "r1-edge", "path": "engine", "label": label, "batch": batch,
                    "steps": args.steps, "threads": args.threads, "spin": args.spin, "rates": rates,
                    "tok_s": median(rates.clone()), "ms_step": median(step_ms.clone()),
                    "share_in_decode": median(model_share.clone()), "load": load, "memory": memory,
                }),
            );
            println!(
                "| {name} | engine | {batch} | {:.0} | {:.2} ({:.0} % in Engine::decode) |",
                median(rates),
                median(step_ms),
                100.0 * median(model_share)
            );
        }

        if let Some(tokens) = args.join {
            join(&mut model, &prompts, tokens, &args, &label);
        }
        if args.engine_only {
            continue;
        }
        drop(model);

        // Batcher: `batch` concurrent requests of `steps` tokens each (ignore_eos), prefill included.
        let metrics = EdgeMetrics::new().unwrap();
        let model = r1_edge::model::load(&LibrarySearch::from_env(), dir, &ort).unwrap();
        let settings = BatchSettings {
            dynamic: true,
            max_batch_size: 32,
            max_queue: 64,
            max_queue_wait: None,
        };
        let (submitter, handle) = batcher::spawn(model, settings, metrics).unwrap();
        for &batch in &args.batches {
            let mut rates = Vec::new();
            for _ in 0..args.repeats {
                let started = Instant::now();
                let receivers: Vec<_> = (0..batch)
                    .map(|i| {
                        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                        submitter
                            .try_submit(GenerationRequest {
                                prompt: prompts[i % prompts.len()].clone(),
                                sampling: SamplingParams::GREEDY,
                                max_tokens: args.steps as u32,
                                stop: Vec::new(),
                                ignore_eos: true,
                                events: tx,
                                enqueued_at: Instant::now(),
                            })
                            .unwrap();
                        rx
                    })
                    .collect();
                let mut tokens = 0u64;
                for mut rx in receivers {
                    while let Some(event) = rx.blocking_recv() {
                        if let Event::Done { completion_tokens, .. } = event {
                            tokens += u64::from(completion_tokens);
                            break;
                        }
                    }
                }
                rates.push(tokens as f64 / started.elapsed().as_secs_f64());
            }
            println!("| {name} | batcher (with prefill) | {batch} | {:.0} | |", median(rates));
        }
        drop(submitter);
        handle.join();
    }
}

/// `rows` prompts decode; after a few steps a prompt of about `tokens` tokens arrives and is prefilled
/// whole and merged, as the batcher does between two steps. Reports the long prompt's time to first
/// token and each running row's gap between tokens around the join.
fn join(model: &mut r1_edge::model::LoadedModel, prompts: &[Vec<u32>], tokens: usize, args: &Args, label: &str) {
    let load = loadavg();
    let mut long = Vec::new();
    let mut i = 0;
    while long.len() < tokens {
        long.extend_from_slice(&prompts[i % prompts.len()]);
        i += 1;
    }
    long.truncate(tokens);
    let rows: Vec<&[u32]> = (0..args.join_rows)
        .map(|i| prompts[i % prompts.len()].as_slice())
        .collect();
    let engine = &mut model.engine;
    let mut sampler = Sampler::new(SamplingParams::GREEDY);
    let (mut kv, logits) = engine.prefill(&rows).unwrap();
    let mut next: Vec<u32> = (0..rows.len()).map(|r| sampler.sample(logits.row(r)).token).collect();
    let mut positions: Vec<i64> = rows.iter().map(|p| p.len() as i64).collect();
    let mut gaps = Vec::new();
    let mut last = Instant::now();
    let before = 8;
    let after = 8;
    let mut ttft = Duration::ZERO;
    let mut join_gap = Duration::ZERO;
    for step in 0..before + after {
        if step == before {
            // The long prompt arrives now: the step boundary is where the batcher admits it.
            let arrived = Instant::now();
            let (joined, logits) = engine.prefill(&[long.as_slice()]).unwrap();
            let first = sampler.sample(logits.row(0)).token;
            ttft = arrived.elapsed();
            kv = engine.merge(kv, joined).unwrap();
            next.push(first);
            positions.push(long.len() as i64);
        }
        let logits = engine.decode(&mut kv, &next, &positions).unwrap();
        for (r, t) in next.iter_mut().enumerate() {
            *t = sampler.sample(logits.row(r)).token;
        }
        for p in &mut positions {
            *p += 1;
        }
        let gap = last.elapsed();
        last = Instant::now();
        if step == before {
            join_gap = gap;
        }
        gaps.push(gap.as_secs_f64() * 1000.0);
    }
    let steady_before = median(gaps[1..before].to_vec());
    let steady_after = median(gaps[before + 1..].to_vec());
    append_jsonl(
        args.jsonl.as_deref(),
        serde_json::json!({
            "tool": "r1-edge", "path": "join", "label": label, "rows": args.join_rows,
            "prompt_tokens": long.len(), "threads": args.threads, "load": load,
            "ttft_ms": ttft.as_secs_f64() * 1000.0, "join_gap_ms": join_gap.as_secs_f64() * 1000.0,
            "gap_before_ms": steady_before, "gap_after_ms": steady_after, "gaps_ms": gaps,
        }),
    );
    println!(
        "| {label} | join: {}-token prompt into {} rows | TTFT {:.0} ms | running rows' gap {:.0} ms at the join, {:.0} ms before, {:.0} ms after |",
        long.len(),
        args.join_rows,
        ttft.as_secs_f64() * 1000.0,
        join_gap.as_secs_f64() * 1000.0,
        steady_before,
        steady_after
    );
}
