//! Decode throughput of r1-edge at several batch sizes, through the engine and through the batcher.
//!
//! ```sh
//! cargo bench -p r1-edge --bench decode -- --model models/r1-edge-mini --model models/r1-edge-mini-int8
//! ```
//! Options: `--batches 1,4,8,16,32`, `--steps 64`, `--repeats 3`, `--threads 2`,
//! `--dump-prompts FILE` (the token ids used, for `scripts/bench/python_decode.py`).
//! Prints one Markdown row per (model, path, batch): median tokens/s and ms per decode step.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a benchmark binary

use std::path::PathBuf;
use std::time::Instant;

use r1_edge::batcher::{self, BatchSettings, Event, GenerationRequest};
use r1_edge::config::OrtSection;
use r1_edge::metrics::EdgeMetrics;
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
    dump_prompts: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        models: Vec::new(),
        batches: vec![1, 4, 8, 16, 32],
        steps: 64,
        repeats: 3,
        threads: 2,
        dump_prompts: None,
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
    v[v.len() / 2]
}

fn main() {
    let args = args();
    let ort = OrtSection {
        intra_threads: args.threads,
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
        for &batch in &args.batches {
            let rows: Vec<&[u32]> = (0..batch).map(|i| prompts[i % prompts.len()].as_slice()).collect();
            let mut rates = Vec::new();
            let mut step_ms = Vec::new();
            let mut model_share = Vec::new();
            for _ in 0..args.repeats {
                let (mut kv, logits) = model.engine.prefill(&rows).unwrap();
                let mut sampler = Sampler::new(SamplingParams::GREEDY);
                let mut tokens: Vec<u32> = (0..batch).map(|r| sampler.sample(logits.row(r)).token).collect();
                let mut positions: Vec<i64> = rows.iter().map(|p| p.len() as i64).collect();
                let started = Instant::now();
                let mut in_model = std::time::Duration::ZERO;
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
            }
            println!(
                "| {name} | engine | {batch} | {:.0} | {:.2} ({:.0} % in Engine::decode) |",
                median(rates),
                median(step_ms),
                100.0 * median(model_share)
            );
        }

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
