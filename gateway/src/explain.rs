//! `r1-gateway explain`: one routing decision per request, for JSON lines of chat requests, with no
//! network and no running services — operators test a config on traffic samples before rollout.
//!
//! Input: one OpenAI chat request per line (a missing `model` means the first `models.routed` name;
//! other keys, such as a dataset's labels, are ignored). Output: one line per input line,
//! `{"route","score","tier","reason"}` (plus `"detail"` for rules), or `{"error": "..."}` for a line
//! that is not a request, so output line N always answers input line N. Blank lines are skipped.
//! Pools with members are assumed healthy (one without any is absent) and the sticky memory starts empty; what each serves is what
//! `[edge.capabilities]` / `[center.capabilities]` say over the baselines (the edge plain chat, the
//! center everything), as no model card is read. A request no pool may serve gets `"unservable"` (what
//! it needs: `max_tokens`, `context`, `tools`, ...), which the gateway would refuse with a 400.

use std::io::{self, BufRead, Write};

use r1_proto::{Capabilities, ChatCompletionRequest};
use serde_json::Value;

use crate::config::{CenterTransport, GatewayConfig};
use crate::route::{NoFacts, PoolState, Pools, Router};

/// Counts of one run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Lines answered with a decision.
    pub decided: usize,
    /// Lines answered with an error.
    pub errors: usize,
}

/// Decides every line of `input`, writing one JSON line per request to `output`.
pub fn run(config: &GatewayConfig, input: impl BufRead, mut output: impl Write) -> io::Result<Summary> {
    let router = Router::new(config);
    let present = |members: bool| if members { PoolState::READY } else { PoolState::ABSENT };
    let center_members = config.center.transport != CenterTransport::Http || !config.center.members.is_empty();
    let pools = Pools {
        edge: present(!config.edge.members.is_empty()).serving(config.edge.capabilities.apply(Capabilities::PLAIN)),
        center: present(center_members).serving(config.center.capabilities.apply(Capabilities::FULL)),
    };
    let mut summary = Summary::default();
    for line in input.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let answer = match parse(config, &line) {
            Ok(request) => {
                summary.decided += 1;
                let decision = router.decide(config, &request, &NoFacts, pools);
                let mut answer = serde_json::to_value(decision.decision)
                    .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }));
                if let (Some(unmet), Some(object)) = (decision.unservable, answer.as_object_mut()) {
                    object.insert("unservable".to_owned(), Value::from(unmet.as_str()));
                }
                answer
            }
            Err(message) => {
                summary.errors += 1;
                serde_json::json!({ "error": message })
            }
        };
        writeln!(output, "{answer}")?;
    }
    output.flush()?;
    Ok(summary)
}

/// One request line as `explain` reads it (a missing `model` means the first routed name).
pub fn parse(config: &GatewayConfig, line: &str) -> Result<ChatCompletionRequest, String> {
    let mut value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object_mut().ok_or("not a JSON object")?;
    if !object.contains_key("model") {
        let default = config
            .models
            .routed
            .first()
            .cloned()
            .unwrap_or_else(|| "r1-hybrid".to_owned());
        object.insert("model".to_owned(), Value::String(default));
    }
    serde_json::from_value(value).map_err(|e| format!("not a chat completion request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_answer_per_line_in_order() {
        let config = GatewayConfig::parse("").unwrap();
        let input = concat!(
            r#"{"model": "r1-edge-mini", "messages": [{"role": "user", "content": "hi"}]}"#,
            "\n\n",
            "not json\n",
            r#"{"messages": [{"role": "user", "content": "hello"}], "label": "simple"}"#,
            "\n",
        );
        let mut out = Vec::new();
        let summary = run(&config, input.as_bytes(), &mut out).unwrap();
        assert_eq!(summary, Summary { decided: 2, errors: 1 });
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["route"], "edge");
        assert_eq!(lines[0]["reason"], "rule");
        assert!(lines[1]["error"].as_str().unwrap().starts_with("not JSON"));
        for key in ["route", "score", "tier", "reason"] {
            assert!(lines[2].get(key).is_some(), "{key} in {}", lines[2]);
        }
    }
}
