//! r1-edge on genuine exporter output: Qwen2.5-0.5B-Instruct's architecture at reduced depth and
//! width (`models/qwen2-tiny-*`, made by `models/build/real/make.sh --tiny`), exported by Optimum and by
//! onnxruntime-genai's model builder, run as the files came out of the exporter.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use r1_edge::config::EdgeConfig;
use r1_edge::model::{self, Attention, KvDtype, LoadedModel};
use r1_edge::runtime::LibrarySearch;
use r1_proto::ChatMessage;
use serde_json::{Value, json};

#[path = "support/questions.rs"]
mod questions;

#[path = "support/batching.rs"]
mod batching;

#[path = "support/test_server.rs"]
mod test_server;

use test_server::TestServer;

const OPTIMUM: &str = "qwen2-tiny-optimum";
const GENAI: &str = "qwen2-tiny-genai";
const NAME: &str = "qwen2-tiny";

fn model_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models").join(name)
}

fn load(name: &str, config: &EdgeConfig) -> Result<LoadedModel, model::LoadError> {
    model::load(&LibrarySearch::from_env(), &model_dir(name), &config.onnxruntime)
}

fn one_thread() -> EdgeConfig {
    let mut config = EdgeConfig::default();
    config.onnxruntime.intra_threads = 1;
    config
}

#[test]
fn optimum_export_loads_as_exported() {
    let m = load(OPTIMUM, &one_thread()).unwrap();
    let spec = m.engine.spec();
    // From the graph: 2 layers, GQA with 2 KV heads of 16, position_ids, float32 cache.
    assert_eq!((spec.layers, spec.kv_heads, spec.head_dim), (2, 2, 16));
    assert!(spec.has_position_ids && spec.has_attention_mask);
    assert_eq!((spec.kv_dtype, spec.logits_dtype), (KvDtype::F32, KvDtype::F32));
    assert_eq!(spec.context_length, 4096);
    // transformers writes the chat template to chat_template.jinja, not tokenizer_config.json: the
    // prompt must be ours (its default system message), not the ChatML fallback.
    assert!(m.files.chat_template_file.ends_with("chat_template.jinja"));
    let prompt = m.text.render_chat(&[ChatMessage::user("Hi")]).unwrap();
    assert!(
        prompt.starts_with("<|im_start|>system\nYou are R1 Edge Mini"),
        "{prompt:?}"
    );
    assert_eq!(m.files.eos_ids(), vec![2, 0]);
}

#[test]
fn optimum_export_batched_rows_match_unbatched_token_for_token() {
    let LoadedModel { mut engine, text, .. } = load(OPTIMUM, &one_thread()).unwrap();
    batching::batched_matches_unbatched(&mut engine, &text);
}

/// Greedy, and past end-of-sequence: random weights end an answer anywhere.
fn greedy(question: &str, max_tokens: u32) -> Value {
    json!({
        "model": NAME,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "ignore_eos": true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn optimum_export_serves_chats_and_batches_them_like_single_requests() {
    serves_and_batches(OPTIMUM).await;
}

/// Ten chats one at a time, then all at once: the same answers, and the concurrent ones shared steps.
async fn serves_and_batches(model: &str) {
    let server = TestServer::start(model, NAME, |_| {}).await;
    let questions = &questions::QUESTIONS[..10];
    let mut alone = Vec::new();
    for q in questions {
        let answer = server.chat(greedy(q, 20)).await;
        assert_eq!(answer["choices"][0]["finish_reason"], "length");
        assert_eq!(answer["usage"]["completion_tokens"], 20);
        alone.push(answer);
    }
    assert_eq!(
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await,
        "one request at a time: every step has one row"
    );
    let before = (
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await,
    );
    let together = futures::future::join_all(questions.iter().map(|q| server.chat(greedy(q, 20)))).await;
    let after = (
        server.metric("r1_edge_batch_size_sum").await,
        server.metric("r1_edge_batch_size_count").await,
    );
    let mean_rows = (after.0 - before.0) / (after.1 - before.1);
    assert!(
        mean_rows > 2.0,
        "requests must have shared decode steps, mean batch {mean_rows}"
    );
    let lengths: std::collections::HashSet<u64> = alone
        .iter()
        .map(|r| r["usage"]["prompt_tokens"].as_u64().unwrap())
        .collect();
    assert!(lengths.len() >= 8, "prompts of different lengths: {lengths:?}");
    for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
        assert_eq!(
            a["choices"][0]["message"]["content"], t["choices"][0]["message"]["content"],
            "prompt {i} {:?}",
            questions[i]
        );
        assert_eq!(a["usage"], t["usage"], "prompt {i}");
    }
    server.stop().await;
}

#[test]
fn genai_export_is_run_with_a_shared_cache() {
    let m = load(GENAI, &one_thread()).unwrap();
    let spec = m.engine.spec();
    assert_eq!(spec.attention, Attention::GroupQuery);
    // The graph's head size is symbolic (`kv_cache_dim`): it comes from config.json.
    assert_eq!((spec.layers, spec.kv_heads, spec.head_dim), (2, 2, 16));
    assert!(!spec.has_position_ids, "the graph derives positions from the mask");
    assert_eq!(
        load(OPTIMUM, &one_thread()).unwrap().engine.spec().attention,
        Attention::Masked
    );
}

#[test]
fn genai_export_batched_rows_match_unbatched_token_for_token() {
    let LoadedModel { mut engine, text, .. } = load(GENAI, &one_thread()).unwrap();
    batching::batched_matches_unbatched(&mut engine, &text);
}

#[test]
fn both_exports_of_one_checkpoint_generate_the_same_tokens() {
    // Same random weights, two graphs (Optimum's masked attention, genai's GroupQueryAttention on a
    // shared buffer that grows past its first capacity of 64 positions): the same greedy tokens.
    let mut optimum = load(OPTIMUM, &one_thread()).unwrap();
    let mut genai = load(GENAI, &one_thread()).unwrap();
    for prompt in batching::prompts(&optimum.text) {
        let a = batching::alone(&mut optimum.engine, &prompt, 120);
        let b = batching::alone(&mut genai.engine, &prompt, 120);
        assert_eq!(a, b, "prompt of {} tokens", prompt.len());
    }
}

#[test]
fn both_exports_give_the_same_logits_alone_and_batched() {
    // Tokens can agree while logits drift (random weights leave wide gaps between the top two): compare
    // the numbers. Three rows of different lengths prefilled together, then decoded together.
    let mut optimum = load(OPTIMUM, &one_thread()).unwrap();
    let mut genai = load(GENAI, &one_thread()).unwrap();
    let prompts = batching::prompts(&optimum.text);
    let rows: Vec<&[u32]> = prompts[..3].iter().map(Vec::as_slice).collect();
    let (mut a, la) = optimum.engine.prefill(&rows).unwrap();
    let (mut b, lb) = genai.engine.prefill(&rows).unwrap();
    let mut worst = max_diff(&la, &lb, rows.len());
    let mut positions: Vec<i64> = rows.iter().map(|p| p.len() as i64).collect();
    let mut tokens: Vec<u32> = (0..rows.len()).map(|r| batching::greedy(la.row(r))).collect();
    for _ in 0..80 {
        let la = optimum.engine.decode(&mut a, &tokens, &positions).unwrap();
        let lb = genai.engine.decode(&mut b, &tokens, &positions).unwrap();
        worst = worst.max(max_diff(&la, &lb, rows.len()));
        tokens = (0..rows.len()).map(|r| batching::greedy(la.row(r))).collect();
        positions.iter_mut().for_each(|p| *p += 1);
    }
    assert!(
        b.capacity() >= b.len() && b.capacity() < 2 * (b.len() + 1),
        "capacity {} for {}",
        b.capacity(),
        b.len()
    );
    // KV bytes: rows × positions held × layers × 2 × KV heads × head size × 4 (float32), nothing else.
    let per_position = 2 * 2 * 2 * 16 * 4;
    assert_eq!(a.cache_bytes(), rows.len() * a.capacity() * per_position);
    assert_eq!(b.cache_bytes(), rows.len() * b.capacity() * per_position);
    eprintln!(
        "max |logits diff| {worst}, cache {} of {} positions",
        b.len(),
        b.capacity()
    );
    assert!(worst < 1e-4, "max |logits diff| {worst}");
}

fn max_diff(a: &r1_edge::engine::Logits, b: &r1_edge::engine::Logits, rows: usize) -> f32 {
    (0..rows)
        .flat_map(|r| a.row(r).iter().zip(b.row(r)).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn genai_export_serves_chats_and_batches_them_like_single_requests() {
    serves_and_batches(GENAI).await;
}
