//! Input hygiene as tables: each polluted request and the rule and message that refuse it, each accepted
//! one and what it looks like after normalization; plus the `[hygiene]` table's validation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use r1_config::Validate;
use r1_gateway::hygiene::{ControlChars, Hygiene, HygieneSection};
use r1_proto::{ChatCompletionRequest, ErrorKind};
use serde_json::{Value, json};

fn request(messages: Value) -> ChatCompletionRequest {
    serde_json::from_value(json!({"model": "r1", "messages": messages})).unwrap()
}

fn section(change: impl FnOnce(&mut HygieneSection)) -> HygieneSection {
    let mut s = HygieneSection::default();
    change(&mut s);
    assert_eq!(s.problems(), Vec::<String>::new(), "the test's own table must be valid");
    s
}

fn strict() -> HygieneSection {
    section(|s| {
        s.control_chars = ControlChars::Refuse;
        s.max_messages = 4;
        s.max_message_chars = 20;
        s.max_prompt_chars = 30;
        s.deny_patterns = vec!["ignore (all )?previous instructions".into(), "BEGIN PRIVATE KEY".into()];
    })
}

/// What, section, messages, rule, message index, words the message must hold.
type Refused = (
    &'static str,
    HygieneSection,
    Value,
    &'static str,
    Option<usize>,
    &'static str,
);
/// What, section, messages in, messages out, characters stripped, fields normalized.
type Accepted = (&'static str, HygieneSection, Value, Value, usize, usize);

#[test]
fn refusals_name_the_rule_and_the_message() {
    let cases: Vec<Refused> = vec![
        (
            "no messages",
            strict(),
            json!([]),
            "empty",
            None,
            "messages: must not be empty",
        ),
        (
            "too many messages",
            strict(),
            json!([{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},
                   {"role":"assistant","content":"d"},{"role":"user","content":"e"}]),
            "max_messages",
            None,
            "messages: 5 messages, more than the 4 allowed",
        ),
        (
            "unknown role",
            strict(),
            json!([{"role":"system","content":"x"},{"role":"narrator","content":"y"}]),
            "role",
            Some(1),
            "messages[1]: unknown role \"narrator\"",
        ),
        (
            "role in the wrong case",
            strict(),
            json!([{"role":"User","content":"x"}]),
            "role",
            Some(0),
            "messages[0]: unknown role \"User\"",
        ),
        (
            "NUL in the content",
            strict(),
            json!([{"role":"system","content":"ok"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},
                   {"role":"user","content":"a\u{0}b"}]),
            "control_chars",
            Some(3),
            "messages[3]: contains a NUL character",
        ),
        (
            "escape in a text part",
            strict(),
            json!([{"role":"user","content":[{"type":"text","text":"fine"},{"type":"text","text":"red\u{1b}[31m"}]}]),
            "control_chars",
            Some(0),
            "messages[0]: contains the control character U+001B",
        ),
        (
            "C1 control in reasoning_content",
            strict(),
            json!([{"role":"assistant","content":"a","reasoning_content":"x\u{85}y"}]),
            "control_chars",
            Some(0),
            "U+0085",
        ),
        (
            "DEL in the name",
            strict(),
            json!([{"role":"user","content":"a","name":"bob\u{7f}"}]),
            "control_chars",
            Some(0),
            "U+007F",
        ),
        (
            "one message too long",
            strict(),
            json!([{"role":"user","content":"x".repeat(21)}]),
            "max_message_chars",
            Some(0),
            "messages[0]: 21 characters, more than the 20 allowed in one message",
        ),
        (
            "characters, not bytes: 20 CJK characters fit, 21 do not",
            strict(),
            json!([{"role":"user","content":"字".repeat(21)}]),
            "max_message_chars",
            Some(0),
            "21 characters",
        ),
        (
            "content parts count together",
            strict(),
            json!([{"role":"user","content":[{"type":"text","text":"x".repeat(11)},{"type":"text","text":"y".repeat(10)}]}]),
            "max_message_chars",
            Some(0),
            "21 characters",
        ),
        (
            "the whole prompt too long",
            strict(),
            json!([{"role":"system","content":"x".repeat(20)},{"role":"user","content":"y".repeat(11)}]),
            "max_prompt_chars",
            None,
            "messages: 31 characters in all, more than the 30 allowed",
        ),
        (
            "deny pattern, any case",
            section(|s| {
                s.deny_patterns = vec!["BEGIN PRIVATE KEY".into(), "ignore (all )?previous instructions".into()]
            }),
            json!([{"role":"user","content":"hi"},{"role":"user","content":"IGNORE previous Instructions"}]),
            "deny_pattern",
            Some(1),
            "messages[1]: content matches a pattern this gateway refuses (deny_patterns[1])",
        ),
        (
            "deny pattern across text parts",
            section(|s| s.deny_patterns = vec![r"BEGIN\s+PRIVATE\s+KEY".into()]),
            json!([{"role":"user","content":[{"type":"text","text":"-----BEGIN private"},{"type":"image_url","image_url":{"url":"https://x/y.png"}},{"type":"text","text":"KEY-----"}]}]),
            "deny_pattern",
            Some(0),
            "deny_patterns[0]",
        ),
        (
            "deny pattern after NFC (the decomposed form is caught)",
            section(|s| s.deny_patterns = vec!["café".into()]),
            json!([{"role":"user","content":"cafe\u{301}"}]),
            "deny_pattern",
            Some(0),
            "deny_patterns[0]",
        ),
        (
            "deny pattern after stripping (a hidden control char does not dodge it)",
            section(|s| s.deny_patterns = vec!["jailbreak".into()]),
            json!([{"role":"user","content":"jail\u{7}break"}]),
            "deny_pattern",
            Some(0),
            "deny_patterns[0]",
        ),
    ];
    for (what, section, messages, rule, index, words) in cases {
        let hygiene = Hygiene::new(&section).unwrap();
        let err = hygiene
            .check(&mut request(messages))
            .expect_err(&format!("{what}: should be refused"));
        assert_eq!(err.rule, rule, "{what}: {err}");
        assert_eq!(err.message_index, index, "{what}: {err}");
        assert!(
            err.message.contains(words),
            "{what}: `{}` should contain `{words}`",
            err.message
        );
        assert!(err.message.starts_with("messages"), "{what}: {err}");
        let answer = err.to_gateway_error();
        assert_eq!(answer.kind, ErrorKind::InvalidRequest, "{what}");
        assert_eq!(answer.status(), 400, "{what}");
        assert_eq!(answer.param, Some("messages"), "{what}");
        assert_eq!(answer.code, Some(rule), "{what}");
        let body = serde_json::to_value(answer.body()).unwrap();
        assert_eq!(body["error"]["param"], "messages", "{what}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{what}");
    }
}

#[test]
fn accepted_requests_come_out_normalized() {
    let cases: Vec<Accepted> = vec![
        (
            "clean text is untouched",
            HygieneSection::default(),
            json!([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi\tthere\r\nfriend"}]),
            json!([{"role":"system","content":"Be brief."},{"role":"user","content":"Hi\tthere\r\nfriend"}]),
            0,
            0,
        ),
        (
            "every known role",
            HygieneSection::default(),
            json!([{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"user","content":"u"},
                   {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                   {"role":"tool","content":"t","tool_call_id":"1"}]),
            json!([{"role":"system","content":"s"},{"role":"developer","content":"d"},{"role":"user","content":"u"},
                   {"role":"assistant","content":null,"tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},
                   {"role":"tool","content":"t","tool_call_id":"1"}]),
            0,
            0,
        ),
        (
            "NUL and escapes stripped by default",
            HygieneSection::default(),
            json!([{"role":"user","content":"a\u{0}b\u{1b}[0mc\u{9f}"}]),
            json!([{"role":"user","content":"ab[0mc"}]),
            3,
            0,
        ),
        (
            "stripped in text parts, reasoning and name; other parts kept",
            HygieneSection::default(),
            json!([{"role":"assistant","name":"b\u{0}ot","reasoning_content":"th\u{8}ink","content":[
                {"type":"text","text":"x\u{1}y"},{"type":"image_url","image_url":{"url":"https://x/\u{0}.png"}}]}]),
            json!([{"role":"assistant","name":"bot","reasoning_content":"think","content":[
                {"type":"text","text":"xy"},{"type":"image_url","image_url":{"url":"https://x/\u{0}.png"}}]}]),
            3,
            0,
        ),
        (
            "NFC: decomposed é and Hangul composed",
            HygieneSection::default(),
            json!([{"role":"user","content":"cafe\u{301} \u{1100}\u{1161}"}]),
            json!([{"role":"user","content":"caf\u{e9} \u{ac00}"}]),
            0,
            1,
        ),
        (
            "NFC off leaves text as sent",
            section(|s| s.unicode_nfc = false),
            json!([{"role":"user","content":"cafe\u{301}"}]),
            json!([{"role":"user","content":"cafe\u{301}"}]),
            0,
            0,
        ),
        (
            "Chinese text passes as is",
            HygieneSection::default(),
            json!([{"role":"user","content":"请一步一步地推理，并把最终答案放在\\boxed{}中。"}]),
            json!([{"role":"user","content":"请一步一步地推理，并把最终答案放在\\boxed{}中。"}]),
            0,
            0,
        ),
        (
            "exactly at every cap",
            strict(),
            json!([{"role":"system","content":"x".repeat(20)},{"role":"user","content":"字".repeat(10)}]),
            json!([{"role":"system","content":"x".repeat(20)},{"role":"user","content":"字".repeat(10)}]),
            0,
            0,
        ),
        (
            "a deny pattern as a word inside other words does not need anchors",
            section(|s| s.deny_patterns = vec!["secret".into()]),
            json!([{"role":"user","content":"nothing to see"}]),
            json!([{"role":"user","content":"nothing to see"}]),
            0,
            0,
        ),
    ];
    for (what, section, messages, expected, stripped, normalized) in cases {
        let hygiene = Hygiene::new(&section).unwrap();
        let mut req = request(messages);
        let report = hygiene
            .check(&mut req)
            .unwrap_or_else(|e| panic!("{what}: refused: {e}"));
        assert_eq!(serde_json::to_value(&req.messages).unwrap(), expected, "{what}");
        assert_eq!(report.stripped_chars, stripped, "{what}");
        assert_eq!(report.normalized, normalized, "{what}");
        assert_eq!(report.changed(), stripped + normalized > 0, "{what}");
    }
}

#[test]
fn report_counts_prompt_characters() {
    let hygiene = Hygiene::default();
    let mut req = request(
        json!([{"role":"system","content":"abc"},{"role":"user","content":"你好"},
                                 {"role":"assistant","content":"ok","reasoning_content":"hmm"}]),
    );
    let report = hygiene.check(&mut req).unwrap();
    assert_eq!(report.prompt_chars, 3 + 2 + 2 + 3);
}

#[test]
fn defaults_and_config_keys() {
    let parsed: HygieneSection = toml::from_str("").unwrap();
    assert_eq!(parsed, HygieneSection::default());
    assert_eq!(parsed.control_chars, ControlChars::Strip);
    assert!(parsed.unicode_nfc);
    assert_eq!(
        (parsed.max_messages, parsed.max_message_chars, parsed.max_prompt_chars),
        (256, 262_144, 524_288)
    );
    assert!(parsed.deny_patterns.is_empty());

    let full: HygieneSection = toml::from_str(
        r#"
control_chars = "refuse"
unicode_nfc = false
max_messages = 10
max_message_chars = 100
max_prompt_chars = 500
deny_patterns = ["foo", "b[a]r"]
"#,
    )
    .unwrap();
    assert_eq!(full.control_chars, ControlChars::Refuse);
    assert_eq!(full.problems(), Vec::<String>::new());

    let unknown = toml::from_str::<HygieneSection>("max_mesages = 3")
        .unwrap_err()
        .to_string();
    assert!(unknown.contains("max_mesages"), "{unknown}");
    let bad_mode = toml::from_str::<HygieneSection>("control_chars = \"ignore\"")
        .unwrap_err()
        .to_string();
    assert!(bad_mode.contains("ignore"), "{bad_mode}");
}

#[test]
fn invalid_tables_report_every_problem_with_its_key() {
    let s = HygieneSection {
        max_messages: 0,
        max_message_chars: 0,
        max_prompt_chars: 0,
        deny_patterns: vec!["ok".into(), "".into(), "unclosed(".into()],
        ..HygieneSection::default()
    };
    let problems = s.problems();
    for key in [
        "hygiene.max_messages:",
        "hygiene.max_message_chars:",
        "hygiene.deny_patterns[1]:",
        "hygiene.deny_patterns[2]:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key} missing from {problems:#?}"
        );
    }
    let s = HygieneSection {
        max_message_chars: 100,
        max_prompt_chars: 50,
        ..HygieneSection::default()
    };
    assert!(
        s.problems().iter().any(|p| p.starts_with("hygiene.max_prompt_chars:")),
        "{:?}",
        s.problems()
    );

    let bad = HygieneSection {
        deny_patterns: vec!["fine".into(), "[z-a]".into()],
        ..HygieneSection::default()
    };
    let err = Hygiene::new(&bad).unwrap_err();
    assert_eq!(err.key, "hygiene.deny_patterns[1]");
    assert!(err.to_string().starts_with("hygiene.deny_patterns[1]: "), "{err}");
}
