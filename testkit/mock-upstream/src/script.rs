//! What the mock answers: the scripted completion ([`Script`]) and what one request gets ([`Reply`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Decides the [`Reply`] of the `n`-th chat request (counted from 0 in arrival order).
pub type PerRequest = dyn Fn(u64) -> Reply + Send + Sync;

/// The scripted completion every successful chat request gets, and the failures to inject.
///
/// One token is one chunk: a streamed answer is a role-only chunk, `reasoning` chunks of
/// `reasoning_text` (DeepSeek's `reasoning_content`), `chunks` chunks of `text`, a finishing chunk, an
/// optional usage chunk and `data: [DONE]`. A non-streamed answer carries the same text, after the
/// same generation time. A request's `max_tokens` (or `max_completion_tokens`) below the script's
/// total cuts the answer there, with `finish_reason: "length"`.
#[derive(Clone)]
pub struct Script {
    /// Content chunks per answer.
    pub chunks: u32,
    /// Text of each content chunk.
    pub text: String,
    /// Reasoning chunks before the content (0: none, as OpenAI models answer).
    pub reasoning: u32,
    /// Text of each reasoning chunk.
    pub reasoning_text: String,
    /// From the request to the first token (the role-only chunk and headers go out at once).
    pub first_delay: Duration,
    /// Between two tokens.
    pub chunk_delay: Duration,
    /// The model `GET /v1/models` lists. Answers name the model the request asked for.
    pub model: String,
    /// The context window its card gives as `max_model_len`, as vLLM's does.
    pub max_model_len: u32,
    /// The first `count` chat requests are answered `status` with an OpenAI error body.
    pub fail_first: Option<FailFirst>,
    /// Abort the connection after this many tokens (reasoning and content), without an end.
    pub drop_after: Option<u32>,
    /// At most this many requests are answered at once; the others wait (a server's batch slots).
    pub concurrency: Option<usize>,
    /// Keep the body and headers of the first this-many chat requests (see
    /// [`Handle::recorded`](crate::Handle::recorded)); 0 keeps none, so a benchmark does not grow.
    pub record: usize,
    /// Overrides `fail_first` and `drop_after` per request, by arrival index.
    pub per_request: Option<Arc<PerRequest>>,
    /// Requests whose body contains the text get that reply (a poison prompt, a slow one).
    pub rules: Vec<(String, Reply)>,
    /// In a stream, an SSE comment (`: keep-alive`) this often while no token is due, as servers
    /// do while a reasoning model is silent.
    pub keepalive: Option<Duration>,
}

/// `count` requests answered with `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailFirst {
    /// How many requests fail, from the first.
    pub count: u64,
    /// The HTTP status they get (500, 429, 503, …).
    pub status: u16,
}

impl Default for Script {
    /// Three content tokens, no reasoning, no delays, no failures.
    fn default() -> Self {
        Self {
            chunks: 3,
            text: "ok ".to_owned(),
            reasoning: 0,
            reasoning_text: "hmm ".to_owned(),
            first_delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            model: "deepseek-reasoner".to_owned(),
            // DeepSeek-R1's, as vLLM reports it.
            max_model_len: 163_840,
            fail_first: None,
            drop_after: None,
            concurrency: None,
            record: 0,
            per_request: None,
            rules: Vec::new(),
            keepalive: None,
        }
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("chunks", &self.chunks)
            .field("text", &self.text)
            .field("reasoning", &self.reasoning)
            .field("reasoning_text", &self.reasoning_text)
            .field("first_delay", &self.first_delay)
            .field("chunk_delay", &self.chunk_delay)
            .field("model", &self.model)
            .field("max_model_len", &self.max_model_len)
            .field("fail_first", &self.fail_first)
            .field("drop_after", &self.drop_after)
            .field("concurrency", &self.concurrency)
            .field("record", &self.record)
            .field("per_request", &self.per_request.as_ref().map(|_| "Fn(u64) -> Reply"))
            .field("rules", &self.rules)
            .field("keepalive", &self.keepalive)
            .finish()
    }
}

impl Script {
    /// `chunks` content tokens of `text` each.
    pub fn content(mut self, chunks: u32, text: impl Into<String>) -> Self {
        self.chunks = chunks;
        self.text = text.into();
        self
    }

    /// `chunks` reasoning tokens of `text` each, before the content.
    pub fn reasoning(mut self, chunks: u32, text: impl Into<String>) -> Self {
        self.reasoning = chunks;
        self.reasoning_text = text.into();
        self
    }

    /// Wait `first` before the first token and `between` before each next one.
    pub fn delays(mut self, first: Duration, between: Duration) -> Self {
        self.first_delay = first;
        self.chunk_delay = between;
        self
    }

    /// The model `GET /v1/models` lists.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// The context window the card gives.
    pub fn max_model_len(mut self, tokens: u32) -> Self {
        self.max_model_len = tokens;
        self
    }

    /// Answer the first `count` chat requests with `status` (an OpenAI error body; 429 and 503 with
    /// `retry-after: 1`).
    pub fn fail_first(mut self, count: u64, status: u16) -> Self {
        self.fail_first = Some(FailFirst { count, status });
        self
    }

    /// Abort every answer's connection after `tokens` tokens.
    pub fn drop_after(mut self, tokens: u32) -> Self {
        self.drop_after = Some(tokens);
        self
    }

    /// Answer at most `limit` requests at once (1: one at a time).
    pub fn concurrency(mut self, limit: usize) -> Self {
        self.concurrency = Some(limit);
        self
    }

    /// Keep the first `limit` chat requests' bodies and headers.
    pub fn record(mut self, limit: usize) -> Self {
        self.record = limit;
        self
    }

    /// Decide each request's [`Reply`] by its arrival index, instead of `fail_first`/`drop_after`.
    pub fn per_request(mut self, decide: impl Fn(u64) -> Reply + Send + Sync + 'static) -> Self {
        self.per_request = Some(Arc::new(decide));
        self
    }

    /// Every request whose body contains `text` is answered `status` (a prompt the model server
    /// always fails on), whatever else the script says.
    pub fn poison(self, text: impl Into<String>, status: u16) -> Self {
        self.when(text, Reply::status(status))
    }

    /// Streams send an SSE comment every `interval` while no token is due.
    pub fn keepalive(mut self, interval: Duration) -> Self {
        self.keepalive = Some(interval);
        self
    }

    /// Every request whose body contains `text` gets `reply` (e.g. `Reply::ok().delay(…)` for a
    /// prompt the model thinks about for long), whatever else the script says.
    pub fn when(mut self, text: impl Into<String>, reply: Reply) -> Self {
        self.rules.push((text.into(), reply));
        self
    }

    /// The reply of the `n`-th chat request, whose body is `body`.
    pub(crate) fn reply_to(&self, n: u64, body: &[u8]) -> Reply {
        let text = String::from_utf8_lossy(body);
        match self.rules.iter().find(|(needle, _)| text.contains(needle.as_str())) {
            Some((_, reply)) => reply.clone(),
            None => self.reply(n),
        }
    }

    /// The reply of the `n`-th chat request.
    pub(crate) fn reply(&self, n: u64) -> Reply {
        if let Some(decide) = &self.per_request {
            return decide(n);
        }
        let mut reply = match self.fail_first {
            Some(fail) if n < fail.count => Reply::status(fail.status),
            _ => Reply::ok(),
        };
        reply.drop_after = self.drop_after;
        reply
    }
}

/// What one request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 200: the scripted completion; anything else: an OpenAI error body with this status.
    pub status: u16,
    /// Extra response headers (`x-r1-route`, …).
    pub headers: Vec<(String, String)>,
    /// Waited before anything else (after a concurrency slot is free, which it holds).
    pub delay: Duration,
    /// Abort the connection after this many tokens.
    pub drop_after: Option<u32>,
}

impl Reply {
    /// The scripted completion.
    pub fn ok() -> Self {
        Self::status(200)
    }

    /// `status`: the scripted completion if 200, else an error body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            delay: Duration::ZERO,
            drop_after: None,
        }
    }

    /// With one more response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Waiting `delay` first.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Aborting the connection after `tokens` tokens.
    pub fn drop_after(mut self, tokens: u32) -> Self {
        self.drop_after = Some(tokens);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_first_then_the_script() {
        let script = Script::default().fail_first(2, 429).drop_after(1);
        let statuses: Vec<u16> = (0..4).map(|n| script.reply(n).status).collect();
        assert_eq!(statuses, [429, 429, 200, 200]);
        assert_eq!(script.reply(3).drop_after, Some(1));
    }

    #[test]
    fn poison_prompts_always_fail() {
        let script = Script::default().poison("POISON", 500);
        assert_eq!(
            script
                .reply_to(0, br#"{"messages":[{"content":"a POISON pill"}]}"#)
                .status,
            500
        );
        assert_eq!(script.reply_to(1, br#"{"messages":[{"content":"fine"}]}"#).status, 200);
    }

    #[test]
    fn per_request_overrides_the_rest() {
        let script = Script::default().fail_first(10, 500).per_request(|n| {
            if n % 2 == 0 {
                Reply::ok().header("x-r1-route", "edge")
            } else {
                Reply::status(503)
            }
        });
        assert_eq!(script.reply(0), Reply::ok().header("x-r1-route", "edge"));
        assert_eq!(script.reply(1).status, 503);
    }
}
