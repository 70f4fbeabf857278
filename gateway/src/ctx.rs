//! Per-request state: one typed [`Ctx`], grouped by the phase that fills it (identity, policy, route,
//! upstream, cache). Created by Pingora's `new_ctx`, dropped when the request is done — dropping it gives
//! back the global in-flight place, the caller's concurrency slot and the pool's in-flight count.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use r1_proto::{ChatCompletionRequest, Route, RouteDecision};

use crate::auth::Principal;
use crate::cache::{CacheKey, Capture, LeaderGuard};
use crate::deadline::PhaseClock;
use crate::error::{GatewayError, Source};
use crate::limits::{Admission, InFlightGuard, SubjectHold};
use crate::pools::InFlight;
use crate::usage::UsageTap;

/// Who a request is counted, cached and owned as: the JWT subject, or [`Tenant::ANONYMOUS`] with
/// authentication off. One value for limits, cache keys, tasks and the hand-off alike.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tenant(Arc<str>);

impl Tenant {
    /// The tenant of unauthenticated requests.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// The tenant named `subject`.
    pub fn new(subject: &str) -> Self {
        Self(Arc::from(subject))
    }

    /// The tenant of unauthenticated requests.
    pub fn anonymous() -> Self {
        Self::new(Self::ANONYMOUS)
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for Tenant {
    fn default() -> Self {
        Self::anonymous()
    }
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct Ctx {
    /// `x-request-id`: the client's, or one we generate.
    pub request_id: String,
    /// When the request arrived.
    pub started: Instant,
    /// Who is calling (`request_filter`, after authentication).
    pub identity: Identity,
    /// What the caller holds under the limits (`request_filter`, admission).
    pub policy: Held,
    /// The route decision and the request as it goes upstream (admission, fail-over).
    pub route: Routing,
    /// The current upstream exchange (`upstream_peer` and the response hooks).
    pub upstream: Upstream,
    /// The result cache's part (admission, response hooks).
    pub cache: CacheState,
    /// The request's `Origin`, when CORS allows it: every answer says so.
    pub cors_origin: Option<String>,
    /// The request's spans, when `[telemetry]` traces it (`None` otherwise: nothing is recorded).
    pub trace: Option<crate::trace::RequestTrace>,
}

impl Ctx {
    /// A fresh request, arrived now.
    pub fn new() -> Self {
        Self {
            request_id: String::new(),
            started: Instant::now(),
            identity: Identity::default(),
            policy: Held::default(),
            route: Routing::default(),
            upstream: Upstream::default(),
            cache: CacheState::default(),
            cors_origin: None,
            trace: None,
        }
    }

    /// The route taken so far (`None` before a decision).
    pub fn route(&self) -> Option<Route> {
        self.route.decision.as_ref().map(|d| d.route)
    }

    /// Where an upstream failure of this request comes from.
    pub fn source(&self) -> Source {
        match self.route() {
            Some(Route::Edge) => Source::Edge,
            Some(Route::Center) => Source::Center,
            Some(Route::Cache) => Source::Cache,
            _ => Source::Internal,
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}

/// Who is calling.
#[derive(Debug, Default)]
pub struct Identity {
    /// The tenant (the verified subject, or anonymous).
    pub tenant: Tenant,
    /// The verified token's subject and claims (`None` with authentication off).
    pub principal: Option<std::sync::Arc<Principal>>,
}

/// What a request holds under the limits until it is done.
#[derive(Debug, Default)]
pub struct Held {
    /// A place under the global in-flight bound.
    pub in_flight: Option<InFlightGuard>,
    /// A place among the caller's `concurrent_requests` in this replica (from authentication on).
    pub hold: Option<SubjectHold>,
    /// The caller's admission (its concurrency slot and token reservation).
    pub admission: Option<Admission>,
}

impl Held {
    /// Charges the caller's token budget what the answer really used (its reservation until now).
    pub fn record_usage(&mut self, total_tokens: u64) {
        if let Some(admission) = self.admission.take() {
            admission.record_usage(total_tokens);
        }
    }
}

/// The route decision and the request as it goes upstream.
#[derive(Debug, Default)]
pub struct Routing {
    /// The decision (chat API requests only).
    pub decision: Option<RouteDecision>,
    /// The parsed request, kept to re-target it if its pool fails before anything was sent (its
    /// `model` is then the chosen pool's).
    pub request: Option<ChatCompletionRequest>,
    /// The model the client named: what the answer says it came from (`rename`).
    pub client_model: String,
    /// The API the request came through (its errors take that API's shape).
    pub shape: crate::dialect::Shape,
    /// Asked through another API than chat: what its answer's translator needs.
    pub dialect: Option<crate::dialect::Dialect>,
    /// The body sent upstream: the request with `model` set to the pool's model.
    pub upstream_body: Bytes,
    /// The client's body, while the upstream body can be made from it by [`crate::splice`]: it came
    /// through the chat API and the gateway's checks changed nothing in it.
    pub client_body: Option<Bytes>,
    /// The upstream path, when not `/v1/chat/completions` (embeddings).
    pub upstream_path: Option<&'static str>,
    /// The pool's model, for a request that is not a chat request (`request` holds it for those).
    pub pool_model: Option<String>,
    /// The request named a pool's own model: it never fails over to the other pool.
    pub pinned: bool,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// The task id, when the request went through the hand-off.
    pub task_id: Option<String>,
    /// The center model version the task went to, when versions are configured.
    pub model_version: Option<String>,
}

impl Routing {
    /// The model name of the pool the request goes to (`x-r1-model`).
    pub fn upstream_model(&self) -> Option<&str> {
        self.request
            .as_ref()
            .map(|r| r.model.as_str())
            .or(self.pool_model.as_deref())
    }
}

/// The current upstream exchange.
#[derive(Debug, Default)]
pub struct Upstream {
    /// The member answered with a 5xx status (relayed as the gateway's 502; not an outlier signal).
    pub answered_5xx: bool,
    /// The member of the current attempt said it is busy (429, or 503): another may take the request.
    pub busy: bool,
    /// No member could be given the request (every one busy, or none healthy): the gateway answers 503
    /// itself, counted as a refusal, not as an upstream error.
    pub shed: bool,
    /// Members tried for this request (resolved addresses).
    pub tried: Vec<String>,
    /// The member of the current attempt.
    pub peer: Option<String>,
    /// Holds the pool's in-flight count while the request is upstream.
    pub in_flight: Option<InFlight>,
    /// When the first response body byte reached the client.
    pub first_byte: Option<Instant>,
    /// First-token, idle and total timeouts of the exchange.
    pub clock: Option<PhaseClock>,
    /// The phase whose timeout cut the exchange (the `phase` label of the upstream error count).
    pub timed_out: Option<&'static str>,
    /// Reads the answer's token usage as it passes (and hides the usage chunk the gateway asked for).
    pub usage: Option<UsageTap>,
    /// Puts the client's model name in the answer.
    pub rename: Option<crate::rename::ModelRename>,
    /// Turns a chat answer into the answer of the API the client asked through.
    pub translator: Option<crate::dialect::Translator>,
    /// An error decided by our own logic, answered by `fail_to_proxy`.
    pub error: Option<GatewayError>,
}

/// The result cache's part of a request.
#[derive(Debug, Default)]
pub struct CacheState {
    /// A cacheable request's pending entry (dropped unfilled: waiters go upstream themselves).
    pub fill: Option<CacheFill>,
    /// The answer being captured, once it started with a 200.
    pub capture: Option<Capture>,
}

/// A cacheable request on its way upstream: its answer fills the cache entry.
#[derive(Debug)]
pub enum CacheFill {
    /// The first of identical concurrent requests: the others wait for its answer.
    Leader(LeaderGuard),
    /// A request that did not wait (bounds reached): its answer is stored if complete.
    Key(CacheKey),
}

impl CacheFill {
    /// Stores a complete answer (in the background: the body filter is synchronous).
    pub fn complete(self, cache: crate::cache::Cache, response: r1_proto::ChatCompletionResponse) {
        tokio::spawn(async move {
            match self {
                Self::Leader(guard) => {
                    guard.complete(&response).await;
                }
                Self::Key(key) => {
                    cache.store(&key, &response).await;
                }
            }
        });
    }
}
