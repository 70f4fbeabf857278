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

#[test]
fn explain_over_the_labeled_set_gives_the_scorer_auc() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let dataset = std::fs::read_to_string(format!("{root}/gateway/data/complexity.jsonl")).unwrap();
    let config_path = format!("{root}/deploy/config/gateway.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_r1-gateway"))
        .args(["explain", "--config", &config_path])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = dataset.clone();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(output.status.success(), "explain exit {}", output.status);

    let config = GatewayConfig::load(std::path::Path::new(&config_path)).unwrap();
    let scorer = Scorer::new();
    let lines: Vec<&str> = dataset.lines().filter(|l| !l.trim().is_empty()).collect();
    let decisions: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
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
