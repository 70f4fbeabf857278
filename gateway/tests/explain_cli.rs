//! `r1-gateway explain` as operators run it: the labeled dataset on stdin, one decision per line on
//! stdout, no network. Its scores are the scorer's, so its AUC is the one docs/ROUTING-SCORER.md reports.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::io::Write;
use std::process::{Command, Stdio};

use r1_gateway::config::GatewayConfig;
use r1_gateway::score::Scorer;
use serde_json::Value;

fn auc(scored: &[(f32, bool)]) -> f64 {
    let (pos, neg): (Vec<f32>, Vec<f32>) = (
        scored.iter().filter(|s| s.1).map(|s| s.0).collect(),
        scored.iter().filter(|s| !s.1).map(|s| s.0).collect(),
    );
    let mut wins = 0.0;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (pos.len() * neg.len()) as f64
}

/// `r1-gateway explain --config <config_path>` over `input`: one decision per line.
fn explain(config_path: &str, input: String) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
        .args(["explain", "--config", config_path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "explain exit {}", output.status);
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn explain_over_the_labeled_set_gives_the_scorer_auc() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dataset = std::fs::read_to_string(format!("{root}/gateway/data/complexity.jsonl")).unwrap();
    let config_path = format!("{root}/deploy/config/gateway.toml");
    let decisions = explain(&config_path, dataset.clone());

    let config = GatewayConfig::load(std::path::Path::new(&config_path)).unwrap();
    let scorer = Scorer::new();
    let lines: Vec<&str> = dataset.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(decisions.len(), lines.len(), "one decision per request");
    let mut scored = Vec::new();
    for (line, decision) in lines.iter().zip(&decisions) {
        for key in ["route", "score", "tier", "reason"] {
            assert!(decision.get(key).is_some(), "{key} missing in {decision}");
        }
        let labeled: Value = serde_json::from_str(line).unwrap();
        let request = r1_gateway::explain::parse(&config, line).unwrap();
        let score = decision["score"].as_f64().unwrap() as f32;
        assert_eq!(
            score,
            scorer.assess(&request).score,
            "explain prints the scorer's score"
        );
        scored.push((score, labeled["label"] == "complex"));
    }
    let auc = auc(&scored);
    eprintln!("explain over {} labeled requests: AUC {auc:.4}", scored.len());
    assert!(auc >= 0.95, "AUC {auc}");
}

#[test]
fn explain_applies_the_configs_capabilities_and_names_what_no_pool_serves() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let config_path = format!("{root}/deploy/config/api-direct.toml");
    let input = [
        r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{}}}}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_object"}}"#,
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":100000}"#,
    ]
    .join("\n");
    let decisions = explain(&config_path, input);
    // DeepSeek's API (as [center.capabilities] declares it) has json_object but not json_schema, and
    // answers at most 64K tokens.
    assert_eq!(decisions[0]["unservable"], "response_format", "{decisions:?}");
    assert!(decisions[1].get("unservable").is_none(), "{decisions:?}");
    assert_eq!(decisions[2]["unservable"], "max_tokens", "{decisions:?}");
}
