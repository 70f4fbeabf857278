//! The engine on the shipped model: a row's greedy tokens do not depend on which other rows share its
//! batch, when they joined, or who left — the property the dynamic batcher relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use r1_edge::config::OrtSection;
use r1_edge::engine::{Engine, KvBatch};
use r1_edge::model::{self, LoadedModel};
use r1_edge::runtime::LibrarySearch;
use r1_edge::sampling::{Sampler, SamplingParams};
use r1_edge::text::TextCodec;
use r1_proto::ChatMessage;

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(name)
}

fn load(name: &str) -> LoadedModel {
    model::load(&LibrarySearch::from_env(), &model_dir(name), &OrtSection::default()).unwrap()
}

#[path = "support/questions.rs"]
mod questions;

/// Eight prompts of different lengths.
const QUESTIONS: [&str; 8] = [
    questions::QUESTIONS[0],
    questions::QUESTIONS[1],
    questions::QUESTIONS[2],
    questions::QUESTIONS[3],
    questions::QUESTIONS[4],
    questions::QUESTIONS[5],
    questions::QUESTIONS[6],
    questions::QUESTIONS[7],
];

fn prompts(text: &TextCodec) -> Vec<Vec<u32>> {
    QUESTIONS
        .iter()
        .map(|q| {
            text.encode(&text.render_chat(&[ChatMessage::user(*q)]).unwrap())
                .unwrap()
        })
        .collect()
}

fn greedy(logits: &[f32]) -> u32 {
    Sampler::new(SamplingParams::GREEDY).sample(logits).token
}

/// Each prompt alone: prefill, then `steps` decode steps.
fn alone(engine: &mut Engine, prompt: &[u32], steps: usize) -> Vec<u32> {
    let (mut batch, logits) = engine.prefill(&[prompt]).unwrap();
    let mut out = vec![greedy(logits.row(0))];
    for step in 0..steps {
        let pos = (prompt.len() + step) as i64;
        let logits = engine.decode(&mut batch, &[*out.last().unwrap()], &[pos]).unwrap();
        out.push(greedy(logits.row(0)));
    }
    out
}

struct Row {
    prompt_len: usize,
    out: Vec<u32>,
    want: usize,
}

#[test]
fn batched_rows_match_unbatched_token_for_token() {
    batched_matches_unbatched("r1-edge-mini");
}

#[test]
fn fp16_model_uses_a_float16_cache_and_batches_the_same() {
    let m = load("r1-edge-mini-fp16");
    assert_eq!(m.engine.spec().kv_dtype, r1_edge::model::KvDtype::F16);
    assert_eq!(m.engine.spec().logits_dtype, r1_edge::model::KvDtype::F16);
    drop(m);
    batched_matches_unbatched("r1-edge-mini-fp16");
    // And it mostly says what FP32 says: FP16 logits differ by ~1e-2, which flips near-ties (the
    // build's own check reports 100 % agreement on its sample prompts, 299/300 on held-out ones).
    let (mut fp32, mut fp16) = (load("r1-edge-mini"), load("r1-edge-mini-fp16"));
    let mut same = 0;
    for prompt in prompts(&fp32.text) {
        let (a, b) = (
            alone(&mut fp32.engine, &prompt, 12),
            alone(&mut fp16.engine, &prompt, 12),
        );
        eprintln!("fp32 {:?}\nfp16 {:?}", fp32.text.decode(&a), fp16.text.decode(&b));
        same += usize::from(a == b);
    }
    assert!(same >= 6, "FP16 agreed with FP32 on {same}/8 prompts");
}

fn batched_matches_unbatched(model: &str) {
    let LoadedModel { mut engine, text, .. } = load(model);
    let prompts = prompts(&text);
    let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(
        lens.iter().collect::<std::collections::HashSet<_>>().len() >= 5,
        "prompts of different lengths: {lens:?}"
    );

    let steps = |i: usize| 6 + 3 * i; // different lengths, so rows leave at different steps
    let expected: Vec<Vec<u32>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| alone(&mut engine, p, steps(i)))
        .collect();

    // Rows 0..3 start together; 3..6 join after 2 steps; 6..8 after 5 steps; finished rows leave.
    let joins = [(0usize, 0..3usize), (2, 3..6), (5, 6..8)];
    let mut batch: Option<KvBatch> = None;
    let mut rows: Vec<(usize, Row)> = Vec::new();
    let mut done: Vec<(usize, Vec<u32>)> = Vec::new();
    for step in 0.. {
        for (at, range) in joins.iter().cloned() {
            if at == step {
                let group: Vec<&[u32]> = range.clone().map(|i| prompts[i].as_slice()).collect();
                let (joined, logits) = engine.prefill(&group).unwrap();
                for (k, i) in range.enumerate() {
                    rows.push((
                        i,
                        Row {
                            prompt_len: prompts[i].len(),
                            out: vec![greedy(logits.row(k))],
                            want: steps(i) + 1,
                        },
                    ));
                }
                batch = Some(match batch.take() {
                    Some(b) => engine.merge(b, joined).unwrap(),
                    None => joined,
                });
            }
        }
        if rows.is_empty() {
            break;
        }
        let b = batch.as_mut().unwrap();
        let tokens: Vec<u32> = rows.iter().map(|(_, r)| *r.out.last().unwrap()).collect();
        let positions: Vec<i64> = rows
            .iter()
            .map(|(_, r)| (r.prompt_len + r.out.len() - 1) as i64)
            .collect();
        let logits = engine.decode(b, &tokens, &positions).unwrap();
        for (k, (_, r)) in rows.iter_mut().enumerate() {
            r.out.push(greedy(logits.row(k)));
        }
        let keep: Vec<bool> = rows.iter().map(|(_, r)| r.out.len() < r.want).collect();
        for (i, r) in rows.iter().filter(|(_, r)| r.out.len() >= r.want) {
            done.push((*i, r.out.clone()));
        }
        batch = Some(engine.retain(batch.take().unwrap(), &keep).unwrap());
        rows.retain(|(_, r)| r.out.len() < r.want);
        assert_eq!(batch.as_ref().unwrap().rows(), rows.len());
        if rows.is_empty() && step >= 5 {
            break;
        }
    }
    done.sort_by_key(|(i, _)| *i);
    assert_eq!(done.len(), prompts.len());
    for (i, out) in done {
        assert_eq!(out, expected[i], "prompt {i} ({:?}) batched vs alone", QUESTIONS[i]);
    }
}

#[test]
fn an_execution_provider_the_library_lacks_is_a_clear_error() {
    use r1_edge::config::Provider;
    let options = OrtSection {
        execution_providers: vec![Provider::Cuda, Provider::Cpu],
        ..OrtSection::default()
    };
    let err = model::load(&LibrarySearch::from_env(), &model_dir("r1-edge-mini"), &options)
        .unwrap_err()
        .to_string();
    // The PyPI wheel is a CPU build: asking for CUDA must fail loudly, never fall back silently.
    assert!(err.contains("execution providers") && err.contains("CUDA"), "{err}");
}
