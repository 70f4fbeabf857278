//! A stored answer served again: as a JSON body, or replayed as the SSE events a live stream of it
//! would have carried, in OpenAI's shapes.

use bytes::Bytes;
use r1_proto::{ChatCompletionChunk, ChatCompletionResponse, ChunkChoice, ChunkDelta, Nullable, Role, Usage, sse};
use serde_json::Value;

/// A fresh completion id and the current time: every answer, cached or not, has its own.
fn fresh_identity() -> (String, u64) {
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (id, created)
}

/// The stored usage, marked as served from cache: every prompt token counts as cached
/// (`prompt_tokens_details.cached_tokens`, and DeepSeek's `prompt_cache_hit_tokens` /
/// `prompt_cache_miss_tokens` when the upstream reported them). Completion counts stay as generated.
pub(super) fn cached_usage(usage: &Usage) -> Usage {
    let mut usage = usage.clone();
    let mut details = usage.prompt_tokens_details.get().cloned().unwrap_or_default();
    details.cached_tokens = Nullable::Value(usage.prompt_tokens);
    usage.prompt_tokens_details = Nullable::Value(details);
    if usage.extra.contains_key("prompt_cache_hit_tokens") {
        usage
            .extra
            .insert("prompt_cache_hit_tokens".to_owned(), Value::from(usage.prompt_tokens));
    }
    if usage.extra.contains_key("prompt_cache_miss_tokens") {
        usage
            .extra
            .insert("prompt_cache_miss_tokens".to_owned(), Value::from(0u64));
    }
    usage
}

/// The JSON body of a hit: the stored completion with a fresh id and time, the `model` the client
/// named, and cached usage.
pub(super) fn json(stored: &ChatCompletionResponse, model: &str) -> Bytes {
    let (id, created) = fresh_identity();
    let mut response = stored.clone();
    response.id = id;
    response.created = created;
    model.clone_into(&mut response.model);
    if let Nullable::Value(usage) = &response.usage {
        response.usage = Nullable::Value(cached_usage(usage));
    }
    Bytes::from(serde_json::to_vec(&response).unwrap_or_default())
}

/// The SSE events of a hit, in order: per choice a role chunk, a reasoning chunk (if the answer has
/// reasoning), a content chunk (if it has text; it carries the stored `logprobs`), a finish chunk; then,
/// when `include_usage`, the usage-only chunk (`choices: []`); then `data: [DONE]`. With
/// `include_usage` every other chunk carries `"usage": null`, as OpenAI's do.
pub(super) fn sse(stored: &ChatCompletionResponse, model: &str, include_usage: bool) -> Vec<Bytes> {
    let (id, created) = fresh_identity();
    let chunk = |choice: ChunkChoice| {
        let mut chunk = ChatCompletionChunk::new(id.clone(), created, model.to_owned()).with_choice(choice);
        chunk.system_fingerprint = stored.system_fingerprint.clone();
        if include_usage {
            chunk.usage = Nullable::Null;
        }
        Bytes::from(chunk.to_sse_event())
    };
    let mut events = Vec::with_capacity(stored.choices.len() * 4 + 2);
    for choice in &stored.choices {
        let message = &choice.message;
        let mut opening = ChunkDelta::role(Role::Assistant);
        // Message keys a delta can carry as they are (`refusal`, `annotations`, …); `null`s are left out.
        opening.extra.extend(
            message
                .extra
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        events.push(chunk(ChunkChoice::new(choice.index, opening)));
        if let Some(reasoning) = message.reasoning().filter(|r| !r.is_empty()) {
            events.push(chunk(ChunkChoice::new(choice.index, ChunkDelta::reasoning(reasoning))));
        }
        let text = message.text();
        if !text.is_empty() {
            let mut content = ChunkChoice::new(choice.index, ChunkDelta::content(text.into_owned()));
            if let Nullable::Value(logprobs) = &choice.logprobs {
                content.logprobs = Nullable::Value(logprobs.clone());
            }
            events.push(chunk(content));
        }
        let mut finish = ChunkChoice::new(choice.index, ChunkDelta::default());
        finish.finish_reason = choice.finish_reason.clone();
        events.push(chunk(finish));
    }
    if include_usage && let Nullable::Value(usage) = &stored.usage {
        let mut last = ChatCompletionChunk::usage_only(id.clone(), created, stored.model.clone(), cached_usage(usage));
        last.system_fingerprint = stored.system_fingerprint.clone();
        events.push(Bytes::from(last.to_sse_event()));
    }
    events.push(Bytes::from_static(sse::DONE));
    events
}
