//! Latency of `Scorer::assess` per request: p50/p90/p99/p99.9/max over ~20k mixed dataset requests.
//!
//! `cargo bench -p r1-gateway --bench score` (release build). The mix is the labeled dataset cycled in a
//! fixed shuffled order, with every 10th request replaced by a "long" one: several dataset prompts joined
//! into one 2–4 KB user message (the size of a typical pasted paragraph or snippet).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_precision_loss
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use r1_gateway::score::Scorer;
use r1_proto::{ChatCompletionRequest, ChatMessage};
use serde_json::Value;

const DATASET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/complexity.jsonl");
const REQUESTS: usize = 20_000;
const WARMUP: usize = 2_000;

fn load() -> Vec<ChatCompletionRequest> {
    std::fs::read_to_string(DATASET)
        .expect("read dataset")
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut value: Value = serde_json::from_str(line).unwrap();
            value["model"] = Value::from("bench");
            serde_json::from_value(value).unwrap()
        })
        .collect()
}

/// A deterministic pseudo-random sequence (xorshift64*), so every run measures the same mix.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn mix(dataset: &[ChatCompletionRequest]) -> Vec<ChatCompletionRequest> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..REQUESTS)
        .map(|i| {
            if i % 10 == 9 {
                let target = 2048 + rng.below(2048);
                let mut text = String::new();
                while text.len() < target {
                    let other = &dataset[rng.below(dataset.len())];
                    if let Some(message) = other.messages.last() {
                        text.push_str(&message.text());
                        text.push_str("\n\n");
                    }
                }
                ChatCompletionRequest::new("bench", vec![ChatMessage::user(text)])
            } else {
                dataset[rng.below(dataset.len())].clone()
            }
        })
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn report(name: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    println!(
        "{name:<18} n={:<6} mean {:>7.2} µs  p50 {:>7.2} µs  p90 {:>7.2} µs  p99 {:>7.2} µs  p99.9 {:>7.2} µs  max {:>8.2} µs",
        times.len(),
        micros(mean),
        micros(percentile(&times, 0.50)),
        micros(percentile(&times, 0.90)),
        micros(percentile(&times, 0.99)),
        micros(percentile(&times, 0.999)),
        micros(*times.last().unwrap()),
    );
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let dataset = load();
    let requests = mix(&dataset);
    let bytes: usize = requests
        .iter()
        .map(|r| r.messages.iter().map(|m| m.text().len()).sum::<usize>())
        .sum();

    let started = Instant::now();
    let scorer = Scorer::new();
    let build = started.elapsed();

    for request in requests.iter().cycle().take(WARMUP) {
        black_box(scorer.assess(black_box(request)));
    }

    let mut all = Vec::with_capacity(requests.len());
    let mut long = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        let start = Instant::now();
        let assessment = scorer.assess(black_box(request));
        let elapsed = start.elapsed();
        black_box(assessment);
        all.push(elapsed);
        if i % 10 == 9 {
            long.push(elapsed);
        }
    }

    println!(
        "complexity scorer: {} requests ({} dataset prompts cycled, every 10th a 2-4 KB message), {:.0} bytes of \
         text on average; Scorer::new() took {:.2} ms",
        requests.len(),
        dataset.len(),
        bytes as f64 / requests.len() as f64,
        build.as_secs_f64() * 1e3
    );
    report("all", all);
    report("long (2-4 KB)", long);

    // Bounds, not typical traffic: a 100 KB paste (scanned by head and tail) and a 200-turn conversation.
    let huge = ChatCompletionRequest::new(
        "bench",
        vec![ChatMessage::user("lorem ipsum dolor sit amet ".repeat(3_800))],
    );
    let deep = ChatCompletionRequest::new(
        "bench",
        (0..200)
            .map(|i| {
                if i % 2 == 0 {
                    ChatMessage::user(format!("Turn {i}: and why does that happen? Explain the trade-offs."))
                } else {
                    ChatMessage::assistant("Because of the way the scheduler works. ".repeat(10))
                }
            })
            .collect(),
    );
    for (name, request) in [("100 KB message", &huge), ("200-turn dialogue", &deep)] {
        let times = (0..500)
            .map(|_| {
                let start = Instant::now();
                black_box(scorer.assess(black_box(request)));
                start.elapsed()
            })
            .collect();
        report(name, times);
    }
}
