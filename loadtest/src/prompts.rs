//! Request bodies: the built-in prompts or a JSONL file, prepared once into the bytes that are sent.

use std::path::Path;

use anyhow::{Context, ensure};
use bytes::Bytes;
use serde_json::{Value, json};

/// Built-in prompts, simple and complex, English and Chinese, so a default run exercises both routes.
const BUILTIN: [&str; 8] = [
    "Hello!",
    "What is the capital of France?",
    "你好",
    "What day comes after Monday?",
    "Prove that the square root of 2 is irrational, step by step.",
    "设计一个支持高并发的分布式限流系统，并分析它的一致性和可用性取舍。",
    "Debug this: my Rust service deadlocks when two tasks lock the same two mutexes in different orders.",
    "Compare B-trees and LSM-trees for a write-heavy time-series workload and recommend one, with reasons.",
];

/// The built-in prompts as `{"messages": [...]}` objects (no model: the run's `--model` fills it in).
pub fn builtin() -> Vec<Value> {
    BUILTIN
        .iter()
        .map(|text| json!({"messages": [{"role": "user", "content": text}]}))
        .collect()
}

/// Reads a JSONL file: one chat request object per line (a full OpenAI request or just
/// `{"messages": [...]}`). Blank lines are skipped; every other line must be an object with a
/// `messages` array, and an error names the first line that is not.
pub fn load(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading prompts from {}", path.display()))?;
    parse_jsonl(&text).with_context(|| format!("prompts file {}", path.display()))
}

/// [`load`] without the file.
pub fn parse_jsonl(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut prompts = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let number = index + 1;
        let value: Value = serde_json::from_str(line).with_context(|| format!("line {number}: not JSON"))?;
        ensure!(
            value.get("messages").is_some_and(Value::is_array),
            "line {number}: expected an object with a `messages` array"
        );
        prompts.push(value);
    }
    ensure!(!prompts.is_empty(), "no prompts (every line was blank)");
    Ok(prompts)
}

/// Serializes each prompt as it will be sent: `model` filled in where missing, `max_tokens`
/// overridden when given, and `stream` set to the run's mode (so every request is measured the same way).
pub fn prepare(prompts: &[Value], model: &str, max_tokens: Option<u32>, stream: bool) -> anyhow::Result<Vec<Bytes>> {
    prompts
        .iter()
        .map(|prompt| {
            let mut body = prompt.clone();
            let object = body.as_object_mut().context("a prompt is not a JSON object")?;
            object.entry("model").or_insert_with(|| Value::from(model));
            if let Some(max_tokens) = max_tokens {
                object.insert("max_tokens".to_owned(), Value::from(max_tokens));
            }
            object.insert("stream".to_owned(), Value::from(stream));
            Ok(Bytes::from(serde_json::to_vec(&body)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_takes_full_requests_and_bare_messages() {
        let text = "{\"model\":\"m1\",\"messages\":[{\"role\":\"user\",\"content\":\"a\"}],\"max_tokens\":5}\n\n\
                    {\"messages\":[{\"role\":\"user\",\"content\":\"b\"}]}\n";
        let prompts = parse_jsonl(text).unwrap();
        assert_eq!(prompts.len(), 2);
        let bodies = prepare(&prompts, "deepseek-r1", Some(16), true).unwrap();
        let first: Value = serde_json::from_slice(&bodies[0]).unwrap();
        let second: Value = serde_json::from_slice(&bodies[1]).unwrap();
        assert_eq!(first["model"], "m1");
        assert_eq!(first["max_tokens"], 16);
        assert_eq!(second["model"], "deepseek-r1");
        assert_eq!(second["stream"], true);
        assert_eq!(second["messages"][0]["content"], "b");
    }

    #[test]
    fn jsonl_errors_name_the_line() {
        let error = parse_jsonl("{\"messages\":[]}\n{\"prompt\":\"x\"}\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("line 2"), "{error}");
        let error = parse_jsonl("{\"messages\":[]}\nnot json\n").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(parse_jsonl("\n  \n").is_err());
    }

    #[test]
    fn builtin_prompts_prepare_without_a_model_or_max_tokens() {
        let bodies = prepare(&builtin(), "deepseek-r1", None, false).unwrap();
        assert_eq!(bodies.len(), BUILTIN.len());
        let body: Value = serde_json::from_slice(&bodies[0]).unwrap();
        assert_eq!(body["model"], "deepseek-r1");
        assert_eq!(body["stream"], false);
        assert!(body.get("max_tokens").is_none());
    }
}
