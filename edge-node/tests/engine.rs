//! The engine on the shipped model: a row's greedy tokens do not depend on which other rows share its
//! batch, when they joined, or who left — the property the dynamic batcher relies on.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use r1_edge::config::OrtSection;
use r1_edge::model::{self, LoadedModel};
use r1_edge::runtime::LibrarySearch;

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(name)
}

fn load(name: &str) -> LoadedModel {
    model::load(&LibrarySearch::from_env(), &model_dir(name), &OrtSection::default()).unwrap()
}

#[path = "support/questions.rs"]
mod questions;

#[path = "support/batching.rs"]
mod batching;
use batching::{alone, batched_matches_unbatched, prompts};

#[test]
fn batched_rows_match_unbatched_token_for_token() {
    let LoadedModel { mut engine, text, .. } = load("r1-edge-mini");
    batched_matches_unbatched(&mut engine, &text);
}

#[test]
fn fp16_model_uses_a_float16_cache_and_batches_the_same() {
    let m = load("r1-edge-mini-fp16");
    assert_eq!(m.engine.spec().kv_dtype, r1_edge::model::KvDtype::F16);
    assert_eq!(m.engine.spec().logits_dtype, r1_edge::model::KvDtype::F16);
    let LoadedModel { mut engine, text, .. } = m;
    batched_matches_unbatched(&mut engine, &text);
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
