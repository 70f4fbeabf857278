//! OpenAI-shaped bodies, written out as the APIs send them, survive parse → serialize unchanged.

use r1_proto::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ErrorBody, FinishReason, MessageContent,
    Nullable, Role, Stop,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Parses `text` as `T`, asserts that serializing it gives back the same JSON value, returns it.
fn round_trip<T: DeserializeOwned + Serialize>(text: &str) -> Result<T, serde_json::Error> {
    let original: Value = serde_json::from_str(text)?;
    let parsed: T = serde_json::from_str(text)?;
    assert_eq!(serde_json::to_value(&parsed)?, original, "round trip changed the body");
    Ok(parsed)
}

#[test]
fn openai_chat_completion_response() {
    let response: ChatCompletionResponse = round_trip(
        r#"{
          "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
          "object": "chat.completion",
          "created": 1741569952,
          "model": "gpt-4.1-2025-04-14",
          "choices": [
            {
              "index": 0,
              "message": {
                "role": "assistant",
                "content": "Hello! How can I assist you today?",
                "refusal": null,
                "annotations": []
              },
              "logprobs": null,
              "finish_reason": "stop"
            }
          ],
          "usage": {
            "prompt_tokens": 19,
            "completion_tokens": 10,
            "total_tokens": 29,
            "prompt_tokens_details": {
              "cached_tokens": 0,
              "audio_tokens": 0
            },
            "completion_tokens_details": {
              "reasoning_tokens": 0,
              "audio_tokens": 0,
              "accepted_prediction_tokens": 0,
              "rejected_prediction_tokens": 0
            }
          },
          "service_tier": "default",
          "system_fingerprint": "fp_3a668b2eb1"
        }"#,
    )
    .unwrap();
    assert_eq!(response.object, "chat.completion");
    assert_eq!(response.created, 1_741_569_952);
    let choice = &response.choices[0];
    assert_eq!(choice.finish_reason, Nullable::Value(FinishReason::Stop));
    assert!(choice.logprobs.is_null());
    assert_eq!(choice.message.role, Role::Assistant);
    assert_eq!(choice.message.text(), "Hello! How can I assist you today?");
    assert_eq!(choice.message.extra.get("refusal"), Some(&Value::Null));
    assert_eq!(choice.message.extra.get("annotations"), Some(&json!([])));
    let usage = response.usage.get().unwrap();
    assert_eq!(
        (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens),
        (19, 10, 29)
    );
    assert_eq!(usage.reasoning_tokens(), 0);
    assert_eq!(usage.cached_tokens(), 0);
    assert_eq!(
        response.system_fingerprint.get().map(String::as_str),
        Some("fp_3a668b2eb1")
    );
    assert_eq!(response.extra.get("service_tier"), Some(&json!("default")));
}

#[test]
fn deepseek_reasoner_response() {
    let response: ChatCompletionResponse = round_trip(
        r#"{
          "id": "930c60df-bf64-41c9-a88e-3ec75f81e00e",
          "object": "chat.completion",
          "created": 1737521410,
          "model": "deepseek-reasoner",
          "choices": [
            {
              "index": 0,
              "message": {
                "role": "assistant",
                "content": "9.8 is greater than 9.11.",
                "reasoning_content": "Okay, so I need to compare 9.11 and 9.8. Both have 9 before the decimal point, so I look at the tenths: 1 versus 8. 8 is larger, so 9.8 > 9.11."
              },
              "logprobs": null,
              "finish_reason": "stop"
            }
          ],
          "usage": {
            "prompt_tokens": 15,
            "completion_tokens": 406,
            "total_tokens": 421,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 361},
            "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": 15
          },
          "system_fingerprint": "fp_1c5d8833bc"
        }"#,
    ).unwrap();
    let message = response.first_message().unwrap();
    assert_eq!(message.text(), "9.8 is greater than 9.11.");
    assert!(message.reasoning().unwrap().starts_with("Okay, so I need to compare"));
    let usage = response.usage.get().unwrap();
    assert_eq!(usage.reasoning_tokens(), 361);
    assert_eq!(usage.extra.get("prompt_cache_miss_tokens"), Some(&json!(15)));
}

/// An R1 stream as DeepSeek sends it, ended the OpenAI way with `include_usage`: the role-only
/// opening delta, reasoning deltas (with `"content": null`), content deltas (with
/// `"reasoning_content": null`), the finish chunk, and the usage-only chunk with `choices: []`.
const REASONER_STREAM: [&str; 7] = [
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"Okay"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{"content":null,"reasoning_content":", 2 plus 2"},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{"content":"2 + 2","reasoning_content":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{"content":" = 4.","reasoning_content":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}"#,
    r#"{"id":"e6b0c8f2-3c55-4a57-9d7a-6a1f0d6a2b11","object":"chat.completion.chunk","created":1737521410,"model":"deepseek-reasoner","system_fingerprint":"fp_1c5d8833bc","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":0},"completion_tokens_details":{"reasoning_tokens":5}}}"#,
];

#[test]
fn streamed_chunks_round_trip_and_reassemble() {
    let chunks: Vec<ChatCompletionChunk> = REASONER_STREAM.iter().map(|text| round_trip(text).unwrap()).collect();

    let first = &chunks[0].choices[0];
    assert_eq!(first.delta.role, Nullable::Value(Role::Assistant));
    assert!(first.delta.content.is_null());
    assert!(first.finish_reason.is_null());
    assert!(chunks[0].usage.is_null());

    let mut reasoning = String::new();
    let mut content = String::new();
    let mut finish = None;
    for choice in chunks.iter().flat_map(|chunk| &chunk.choices) {
        reasoning.extend(choice.delta.reasoning_content.get().map(String::as_str));
        content.extend(choice.delta.content.get().map(String::as_str));
        if let Some(reason) = choice.finish_reason.get() {
            finish = Some(reason.clone());
        }
    }
    assert_eq!(reasoning, "Okay, 2 plus 2");
    assert_eq!(content, "2 + 2 = 4.");
    assert_eq!(finish, Some(FinishReason::Stop));

    let finish_chunk = &chunks[5].choices[0];
    assert!(finish_chunk.delta.is_empty());
    assert!(finish_chunk.delta.content.is_absent());

    let last = &chunks[6];
    assert!(last.choices.is_empty());
    let usage = last.usage.get().unwrap();
    assert_eq!((usage.total_tokens, usage.reasoning_tokens()), (21, 5));
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.object == r1_proto::CHAT_COMPLETION_CHUNK_OBJECT)
    );
}

#[test]
fn openai_stream_with_refusal_and_tool_call_deltas() {
    let opening: ChatCompletionChunk = round_trip(
        r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}]}"#,
    ).unwrap();
    assert_eq!(opening.choices[0].delta.content.get().map(String::as_str), Some(""));
    assert!(opening.usage.is_absent());

    let tool_delta: ChatCompletionChunk = round_trip(
        r#"{"id":"chatcmpl-123","object":"chat.completion.chunk","created":1694268190,"model":"gpt-4o-mini","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_DdmO9pD3xa9XTPNJ32zg2hcA","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}"#,
    ).unwrap();
    let delta = &tool_delta.choices[0].delta;
    assert!(!delta.is_empty());
    assert_eq!(delta.extra["tool_calls"][0]["function"]["name"], json!("get_weather"));
}

#[test]
fn openai_error_body() {
    let body: ErrorBody = round_trip(
        r#"{
          "error": {
            "message": "Incorrect API key provided: sk-abc123. You can find your API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key"
          }
        }"#,
    ).unwrap();
    assert_eq!(body.error.error_type, "invalid_request_error");
    assert!(body.error.param.is_null());
    assert_eq!(body.error.code, Nullable::Value(json!("invalid_api_key")));
    assert!(body.error.message.starts_with("Incorrect API key provided"));

    // vLLM writes a numeric code and its own type; both are kept as sent.
    let vllm: ErrorBody = round_trip(
        r#"{"error":{"message":"This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.","type":"BadRequestError","param":null,"code":400}}"#,
    ).unwrap();
    assert_eq!(vllm.error.error_type, "BadRequestError");
    assert_eq!(vllm.error.code, Nullable::Value(json!(400)));
}

#[test]
fn request_with_tools_and_tool_messages() {
    let request: ChatCompletionRequest = round_trip(
        r#"{
          "model": "deepseek-r1",
          "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": [
              {"type": "text", "text": "What's the weather in Paris?"},
              {"type": "image_url", "image_url": {"url": "https://example.com/paris.jpg", "detail": "low"}}
            ]},
            {
              "role": "assistant",
              "content": null,
              "tool_calls": [
                {
                  "id": "call_abc123",
                  "type": "function",
                  "function": {"name": "get_weather", "arguments": "{\"location\": \"Paris, France\"}"}
                }
              ]
            },
            {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature_c\": 18, \"sky\": \"cloudy\"}"}
          ],
          "tools": [
            {
              "type": "function",
              "function": {
                "name": "get_weather",
                "description": "Get the current weather for a location",
                "parameters": {
                  "type": "object",
                  "properties": {"location": {"type": "string", "description": "City and country"}},
                  "required": ["location"],
                  "additionalProperties": false
                },
                "strict": true
              }
            }
          ],
          "tool_choice": "auto",
          "response_format": {"type": "json_object"},
          "logit_bias": {"50256": -100, "15043": 5},
          "parallel_tool_calls": false,
          "temperature": 0.2,
          "top_p": 0.95,
          "top_k": 40,
          "seed": 1234,
          "n": 1,
          "max_completion_tokens": 512,
          "stream": true,
          "stream_options": {"include_usage": true},
          "stop": ["</answer>", "\n\nUser:"],
          "user": "user-1234"
        }"#,
    )
    .unwrap();
    assert_eq!(request.model, "deepseek-r1");
    assert_eq!(request.effective_max_tokens(), Some(512));
    assert!(request.is_stream() && request.include_usage());
    assert_eq!(
        (request.temperature, request.top_p, request.top_k, request.seed),
        (Some(0.2), Some(0.95), Some(40), Some(1234))
    );
    assert_eq!(request.stop_sequences(), ["</answer>", "\n\nUser:"]);
    assert_eq!(request.first_unknown_role(), None);

    let roles: Vec<&str> = request.messages.iter().map(|message| message.role.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "tool"]);
    assert_eq!(request.messages[1].text(), "What's the weather in Paris?");
    let assistant = &request.messages[2];
    assert!(assistant.content.is_null());
    assert_eq!(assistant.extra["tool_calls"][0]["id"], json!("call_abc123"));
    let tool = &request.messages[3];
    assert_eq!(tool.extra.get("tool_call_id"), Some(&json!("call_abc123")));
    assert_eq!(tool.text(), "{\"temperature_c\": 18, \"sky\": \"cloudy\"}");

    assert_eq!(request.extra["tool_choice"], json!("auto"));
    assert_eq!(request.extra["response_format"], json!({"type": "json_object"}));
    assert_eq!(request.extra["logit_bias"], json!({"50256": -100, "15043": 5}));
    assert_eq!(request.extra["parallel_tool_calls"], json!(false));
}

#[test]
fn stop_as_string_and_as_array_keep_their_form() {
    let one: ChatCompletionRequest =
        round_trip(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":"\n\n"}"#).unwrap();
    assert_eq!(one.stop, Some(Stop::One("\n\n".to_owned())));
    assert_eq!(one.stop_sequences(), ["\n\n"]);

    let many: ChatCompletionRequest =
        round_trip(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stop":["END","\n\n"]}"#).unwrap();
    assert_eq!(many.stop, Some(Stop::Many(vec!["END".to_owned(), "\n\n".to_owned()])));
    assert_eq!(many.stop_sequences(), ["END", "\n\n"]);

    let none: ChatCompletionRequest = round_trip(r#"{"model":"m","messages":[]}"#).unwrap();
    assert!(none.stop_sequences().is_empty());
}

#[test]
fn unknown_role_is_kept_verbatim() {
    let request: ChatCompletionRequest = round_trip(
        r#"{"model":"m","messages":[{"role":"user","content":"hi"},{"role":"Moderator","content":"be nice","name":"mod-1"}]}"#,
    ).unwrap();
    let message = &request.messages[1];
    assert_eq!(message.role, Role::Other("Moderator".to_owned()));
    assert_eq!(message.name.as_deref(), Some("mod-1"));
    assert_eq!(request.first_unknown_role(), Some("Moderator"));
}

#[test]
fn parts_content_keeps_its_form() {
    let request: ChatCompletionRequest = round_trip(
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
    ).unwrap();
    assert!(matches!(request.messages[0].content.get(), Some(MessageContent::Parts(parts)) if parts.len() == 2));
    assert_eq!(request.messages[0].text(), "a\nb");
}
