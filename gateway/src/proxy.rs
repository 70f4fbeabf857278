//! The request path: the Pingora hooks r1-gateway implements, in the order Pingora calls them.
//! Each hook is a few lines that call named modules; see `docs/request-lifecycle.md` for the picture.
//!
//! | hook | when it runs | what we do (and Pingora's default) |
//! |---|---|---|
//! | `request_filter` | request header read | local endpoints; for the chat API: read the body (bounded), parse, validate, decide the route, rewrite the body for the chosen pool (default: nothing) |
//! | `upstream_peer` | before each connect attempt | a ready member of the chosen pool, skipping members already tried (default: required) |
//! | `upstream_request_filter` | before the header goes upstream | path, `content-length` of the rewritten body, `x-request-id`; the client's credentials never go upstream (default: nothing) |
//! | `request_body_filter` | body chunks to upstream | the rewritten body replaces the client's (default: pass through) |
//! | `response_filter` | response header to the client | `x-request-id`, `x-r1-route`, `x-r1-route-reason`; SSE gets `x-accel-buffering: no` (default: nothing) |
//! | `response_body_filter` | response chunks to the client | time to first token; first-token / idle / total timeouts of a stream (keep-alive comments are not tokens) (default: nothing) |
//! | `fail_to_connect` | a connect failed | retry on another member: nothing was sent yet (default: no retry) |
//! | `error_while_proxy` | failure after connecting | retry only a stale pooled connection that failed before any answer (the upstream closed it while idle: nothing was processed); anything else is final, the body may have reached a live upstream (default: retry idempotent requests only) |
//! | `fail_to_proxy` | fatal error | the OpenAI error body — or, if the stream already started, an in-band SSE `error` event and no `[DONE]` (default: bare status) |
//! | `logging` | always, last | metrics, outlier accounting (default: nothing) |

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::Peer;
use r1_proto::{ChatCompletionRequest, ErrorKind, InferenceRequest, ModelCard, ModelList, Route, RouteDecision};

use crate::deadline::{self, PhaseClock};
use crate::error::{GatewayError, Source};
use crate::pools::InFlight;
use crate::route::RequestFacts;
use crate::state::Gateway;

/// Largest request body the gateway accepts by default (`limits.max_body_bytes`).
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Largest body that can be proxied over HTTP (Pingora replays the request body from its 64 KiB
/// retry buffer after we have read it for routing). Larger requests are refused with a 413 until the
/// Kafka hand-off carries center traffic.
pub const MAX_PROXIED_BODY_BYTES: usize = 64 * 1024;
/// The tenant of unauthenticated requests.
pub const ANONYMOUS: &str = "anonymous";
/// Connect attempts per request (each on another member).
const MAX_CONNECT_TRIES: usize = 3;

/// Per-request state, created by `new_ctx` and dropped when the request is done.
#[derive(Debug, Default)]
pub struct Ctx {
    /// `x-request-id`: the client's, or one we generate.
    pub request_id: String,
    /// When the request arrived.
    pub started: Option<Instant>,
    /// The route decision (chat API requests only).
    pub decision: Option<RouteDecision>,
    /// The body sent upstream: the client's request with `model` set to the pool's model.
    pub upstream_body: Bytes,
    /// The parsed request, kept to re-target it if its pool fails before anything was sent.
    pub request: Option<ChatCompletionRequest>,
    /// The request named a pool's own model: it never fails over to the other pool.
    pub pinned: bool,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Members tried for this request (resolved addresses).
    pub tried: Vec<String>,
    /// The member of the current attempt.
    pub peer: Option<String>,
    /// Holds the pool's in-flight count while the request is upstream.
    pub in_flight: Option<InFlight>,
    /// When the first response body byte arrived.
    pub first_byte: Option<Instant>,
    /// First-token, idle and total timeouts of the exchange.
    pub clock: Option<PhaseClock>,
    /// The task id, when the request went through the hand-off.
    pub task_id: Option<String>,
    /// Who is calling: the JWT subject (`None` with authentication off: the anonymous tenant).
    pub tenant: Option<String>,
    /// The verified token's subject and claims.
    pub principal: Option<crate::auth::Principal>,
    /// Holds a place under the global in-flight bound until the request is done.
    pub in_flight_guard: Option<crate::limits::InFlightGuard>,
    /// The caller's admission under its limits (frees its concurrency slot when dropped).
    pub admission: Option<crate::limits::Admission>,
    /// A cacheable request's pending cache entry (dropped unfilled: waiters go upstream themselves).
    pub cache_fill: Option<CacheFill>,
    /// The answer being captured for the cache, once it started with a 200.
    pub capture: Option<crate::cache::Capture>,
    /// The center model version the task went to, when versions are configured.
    pub model_version: Option<String>,
    /// The phase whose timeout cut the exchange (the `phase` label of the upstream error count).
    pub timed_out: Option<&'static str>,
    /// An error decided by our own logic, answered by `fail_to_proxy`.
    pub error: Option<GatewayError>,
}

/// The Pingora proxy application.
#[derive(Debug, Clone)]
pub struct GatewayProxy {
    gateway: Arc<Gateway>,
}

impl GatewayProxy {
    /// The proxy over shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

/// Headers and token claims of the client request, for routing rules.
struct HeaderFacts<'a>(&'a RequestHeader, Option<&'a crate::auth::Principal>);

impl RequestFacts for HeaderFacts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn claim(&self, name: &str) -> Option<&str> {
        self.1.and_then(|p| p.claim(name))
    }
}

/// Writes a complete response from the gateway itself.
async fn respond(session: &mut Session, ctx: &Ctx, status: u16, content_type: &str, body: Bytes) -> Result<()> {
    let mut header = ResponseHeader::build(status, Some(4))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(d) = &ctx.decision {
        header.insert_header("x-r1-route", d.route.as_str())?;
        header.insert_header("x-r1-route-reason", d.reason.as_str())?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}

async fn respond_error(session: &mut Session, ctx: &Ctx, error: &GatewayError) -> Result<()> {
    let mut header = ResponseHeader::build(error.status(), Some(6))?;
    let body = Bytes::from(error.body().to_json());
    header.insert_header("content-type", "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(d) = &ctx.decision {
        header.insert_header("x-r1-route", d.route.as_str())?;
        header.insert_header("x-r1-route-reason", d.reason.as_str())?;
    }
    if let Some(seconds) = error.retry_after {
        header.insert_header("retry-after", seconds.to_string())?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}

impl GatewayProxy {
    /// `/v1/tasks` and `/v1/batches` (see [`crate::tasks`]).
    async fn tasks_api(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        method: &str,
        path: &str,
    ) -> std::result::Result<crate::tasks::Reply, GatewayError> {
        let Some(handoff) = self.gateway.handoff() else {
            return Err(GatewayError::downstream(
                ErrorKind::NotFound,
                "asynchronous tasks need the task hand-off (center.transport = \"kafka\" or \"embedded\")",
            ));
        };
        let config = self.gateway.config();
        let tenant = ctx.tenant.as_deref().unwrap_or(ANONYMOUS);
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        match (method, segments.as_slice()) {
            ("POST", ["v1", "tasks"]) => {
                let body = read_body(
                    session,
                    usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX),
                )
                .await?;
                crate::tasks::create_task(&config, &self.gateway.hygiene(), handoff, tenant, &body).await
            }
            ("GET", ["v1", "tasks", id]) => crate::tasks::get_task(handoff, tenant, id).await,
            ("DELETE", ["v1", "tasks", id]) => crate::tasks::cancel_task(handoff, tenant, id).await,
            ("POST", ["v1", "batches"]) => {
                // A batch carries many requests: up to 16 × the single-request limit.
                let limit = usize::try_from(config.limits.max_body_bytes.saturating_mul(16)).unwrap_or(usize::MAX);
                let body = read_body(session, limit).await?;
                crate::tasks::create_batch(&config, &self.gateway.hygiene(), handoff, tenant, &body).await
            }
            ("GET", ["v1", "batches", id]) => crate::tasks::get_batch(handoff, tenant, id).await,
            ("GET", ["v1", "batches", id, "output"]) => crate::tasks::batch_output(handoff, tenant, id).await,
            _ => Err(GatewayError::downstream(
                ErrorKind::NotFound,
                format!("no route for {method} {path}"),
            )),
        }
    }

    /// Answers a request the gateway itself refuses (counted in `r1_rejected_requests_total`).
    async fn refuse(&self, session: &mut Session, ctx: &Ctx, error: &GatewayError) -> Result<()> {
        self.gateway
            .metrics
            .rejected
            .with_label_values(&[error.kind.as_str()])
            .inc();
        tracing::info!(request_id = %ctx.request_id, kind = error.kind.as_str(), message = %error.message, "refused");
        respond_error(session, ctx, error).await
    }

    /// Reads and checks a chat API request, decides its route and prepares the upstream body.
    async fn admit(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        inference_api: bool,
    ) -> std::result::Result<Admitted, GatewayError> {
        let config = self.gateway.config();
        let body_limit = usize::try_from(config.limits.max_body_bytes).unwrap_or(usize::MAX);
        let body = read_body(session, body_limit).await?;
        // A request we cannot forward over HTTP is refused before it is routed — unless the center
        // takes tasks through the hand-off, which carries any body up to the gateway's limit.
        let too_big_to_proxy = session.retry_buffer_truncated() || body.len() > MAX_PROXIED_BODY_BYTES;
        if too_big_to_proxy && self.gateway.handoff().is_none() {
            return Err(GatewayError::downstream(
                ErrorKind::PayloadTooLarge,
                format!("requests over {MAX_PROXIED_BODY_BYTES} bytes cannot be proxied over HTTP"),
            ));
        }
        let request: ChatCompletionRequest = if inference_api {
            let simple: InferenceRequest = serde_json::from_slice(&body).map_err(|e| {
                GatewayError::downstream(
                    ErrorKind::InvalidRequest,
                    format!("not a valid /v1/r1/inference request: {e}"),
                )
            })?;
            let model = config
                .models
                .routed
                .first()
                .cloned()
                .unwrap_or_else(|| "r1-hybrid".to_owned());
            simple.into_chat_request(model)
        } else {
            serde_json::from_slice(&body).map_err(|e| {
                GatewayError::downstream(
                    ErrorKind::InvalidRequest,
                    format!("not a valid chat completion request: {e}"),
                )
            })?
        };
        if !config.knows_model(&request.model) {
            return Err(GatewayError::downstream(
                ErrorKind::NotFound,
                format!("the model `{}` does not exist", request.model),
            )
            .code("model_not_found")
            .param("model"));
        }
        if request.messages.is_empty() {
            return Err(
                GatewayError::downstream(ErrorKind::InvalidRequest, "`messages` must not be empty").param("messages"),
            );
        }
        // Input hygiene (roles included), the max_tokens cap, then the caller's limits (shared through Redis).
        let mut request = request;
        self.gateway
            .hygiene()
            .check(&mut request)
            .map_err(|e| e.to_gateway_error())?;
        config.limits.check_max_tokens(&request)?;
        let tenant = ctx.tenant.clone().unwrap_or_else(|| ANONYMOUS.to_owned());
        let estimated = config.limits.estimated_tokens(&request);
        // The limiter and the cache both ask Redis: at the same time, one round trip on the path.
        // (A cache hit still counts against the caller's limits.)
        let cached = self.cache_key(session, ctx, &request);
        // A tier claim in the token picks that tier's limits.
        let tier = ctx.principal.as_ref().and_then(|p| p.claim(&config.limits.tier_claim));
        let admit = self.gateway.limiter.admit_tier(&tenant, tier, estimated);
        let (admission, lookup) = match &cached {
            Some((cache, key)) => {
                let (admission, lookup) = tokio::join!(admit, cache.lookup(key));
                (admission, Some(lookup))
            }
            None => (admit.await, None),
        };
        ctx.admission = Some(admission.map_err(|refusal| refusal.to_gateway_error())?);
        if let (Some((cache, key)), Some(lookup)) = (cached, lookup)
            && self.answer_lookup(session, ctx, &request, &cache, key, lookup).await?
        {
            return Ok(Admitted::FromCache);
        }

        let decided = self.gateway.router.decide(
            &config,
            &request,
            &HeaderFacts(session.req_header(), ctx.principal.as_ref()),
            self.gateway.pool_states(),
        );
        let decision = decided.decision;
        self.gateway
            .metrics
            .decisions
            .with_label_values(&[decision.route.as_str(), decision.reason.as_str()])
            .inc();
        if let Some(shadow) = &decided.shadow {
            self.gateway
                .metrics
                .shadow_decisions
                .with_label_values(&[shadow.route.as_str(), shadow.reason.as_str()])
                .inc();
        }
        ctx.pinned = request.model == config.edge.model || request.model == config.center.model;
        if too_big_to_proxy && decision.route == Route::Edge {
            return Err(GatewayError::downstream(
                ErrorKind::PayloadTooLarge,
                format!("requests over {MAX_PROXIED_BODY_BYTES} bytes can only be served by the center"),
            ));
        }
        ctx.stream = request.is_stream();
        ctx.request = Some(request);
        retarget(ctx, decision, &config)?;
        Ok(Admitted::Routed)
    }

    /// The cache and key of a request that may be cached.
    fn cache_key(
        &self,
        session: &Session,
        ctx: &Ctx,
        request: &ChatCompletionRequest,
    ) -> Option<(crate::cache::Cache, crate::cache::CacheKey)> {
        let cache = self.gateway.cache()?;
        cache.cacheable(request, &session.req_header().headers)?;
        let key = cache.key(ctx.tenant.as_deref().unwrap_or(""), request)?;
        Some((cache.clone(), key))
    }

    /// Acts on a cache lookup: a hit is answered here (`true`); a cold miss makes this request the
    /// one that fills the entry (identical ones wait for it).
    async fn answer_lookup(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        request: &ChatCompletionRequest,
        cache: &crate::cache::Cache,
        key: crate::cache::CacheKey,
        lookup: crate::cache::Lookup,
    ) -> std::result::Result<bool, GatewayError> {
        match lookup {
            crate::cache::Lookup::Hit(stored) => {
                let decision = RouteDecision::new(
                    Route::Cache,
                    0.0,
                    r1_proto::Tier::Uncertain,
                    r1_proto::RouteReason::CacheHit,
                );
                self.gateway
                    .metrics
                    .decisions
                    .with_label_values(&[decision.route.as_str(), decision.reason.as_str()])
                    .inc();
                ctx.decision = Some(decision);
                let stream = request.is_stream();
                let mut header = ResponseHeader::build(200, Some(8))
                    .map_err(|e| GatewayError::upstream(ErrorKind::Internal, Source::Internal, e.to_string()))?;
                let content_type = if stream {
                    "text/event-stream"
                } else {
                    "application/json"
                };
                let body: Vec<Bytes> = if stream {
                    cache.hit_sse(&stored, request)
                } else {
                    vec![cache.hit_json(&stored)]
                };
                let headers = [
                    ("content-type", content_type),
                    ("x-request-id", ctx.request_id.as_str()),
                    ("x-r1-route", "cache"),
                    ("x-r1-route-reason", "cache_hit"),
                    (crate::cache::RESPONSE_HEADER, "hit"),
                ];
                for (name, value) in headers {
                    let _ = header.insert_header(name, value);
                }
                if stream {
                    let _ = header.insert_header("cache-control", "no-cache");
                    let _ = header.insert_header("x-accel-buffering", "no");
                    let _ = header.insert_header("transfer-encoding", "chunked");
                } else {
                    let length: usize = body.iter().map(Bytes::len).sum();
                    let _ = header.insert_header("content-length", length.to_string());
                }
                let write = async {
                    session.write_response_header(Box::new(header), false).await?;
                    let last = body.len().saturating_sub(1);
                    for (i, piece) in body.into_iter().enumerate() {
                        session.write_response_body(Some(piece), i == last).await?;
                    }
                    Ok::<(), Box<Error>>(())
                };
                if let Err(e) = write.await {
                    tracing::info!(request_id = %ctx.request_id, error = %e, "client went away during a cache hit");
                }
                Ok(true)
            }
            crate::cache::Lookup::Leader(guard) => {
                ctx.cache_fill = Some(CacheFill::Leader(guard));
                Ok(false)
            }
            crate::cache::Lookup::Miss(_) => {
                ctx.cache_fill = Some(CacheFill::Key(key));
                Ok(false)
            }
        }
    }
}

/// How a chat request was admitted.
enum Admitted {
    /// Routed to a pool (see `ctx.decision`).
    Routed,
    /// Already answered from the result cache.
    FromCache,
}

/// A cacheable request on its way upstream: its answer fills the cache entry.
#[derive(Debug)]
pub enum CacheFill {
    /// The first of identical concurrent requests: the others wait for its answer.
    Leader(crate::cache::LeaderGuard),
    /// A request that did not wait (bounds reached): its answer is stored if complete.
    Key(crate::cache::CacheKey),
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

/// Points the request at `decision`'s pool: its model name in the upstream body.
fn retarget(
    ctx: &mut Ctx,
    decision: RouteDecision,
    config: &crate::config::GatewayConfig,
) -> std::result::Result<(), GatewayError> {
    if let Some(request) = ctx.request.as_mut() {
        request.model = match decision.route {
            Route::Edge => config.edge.model.clone(),
            _ => config.center.model.clone(),
        };
        ctx.upstream_body = Bytes::from(serde_json::to_vec(request).map_err(|e| {
            GatewayError::upstream(
                ErrorKind::Internal,
                Source::Internal,
                format!("serializing the upstream request: {e}"),
            )
        })?);
    }
    ctx.decision = Some(decision);
    Ok(())
}

/// Reads the whole request body, refusing more than `limit` bytes (`limits.max_body_bytes`) before
/// reading it all: a declared length over it is refused at once, an undeclared one as soon as it passes.
async fn read_body(session: &mut Session, limit: usize) -> std::result::Result<Bytes, GatewayError> {
    let too_large = || {
        GatewayError::downstream(
            ErrorKind::PayloadTooLarge,
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    // Keep a replayable copy: Pingora sends it upstream (through request_body_filter) after routing.
    session.enable_retry_buffering();
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit));
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return Err(too_large());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(Bytes::from(body)),
            Err(e) => {
                return Err(GatewayError::downstream(
                    ErrorKind::InvalidRequest,
                    format!("reading the request body: {e}"),
                ));
            }
        }
    }
}

/// The `status` label without an allocation for the usual codes.
fn status_label(status: u16) -> std::borrow::Cow<'static, str> {
    std::borrow::Cow::Borrowed(match status {
        0 => "0",
        200 => "200",
        400 => "400",
        401 => "401",
        404 => "404",
        413 => "413",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return std::borrow::Cow::Owned(other.to_string()),
    })
}

fn source_of(route: Option<Route>) -> Source {
    match route {
        Some(Route::Edge) => Source::Edge,
        Some(Route::Center) => Source::Center,
        _ => Source::Internal,
    }
}

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Some(Instant::now()),
            ..Ctx::default()
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = session
            .req_header()
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map_or_else(crate::request_id::next, str::to_owned);
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        // The global in-flight bound comes first: beyond it, shed at once (503 + Retry-After).
        if path.starts_with("/v1/") {
            match self.gateway.limiter.try_enter() {
                Ok(guard) => ctx.in_flight_guard = Some(guard),
                Err(refusal) => {
                    self.refuse(session, ctx, &refusal.to_gateway_error()).await?;
                    return Ok(true);
                }
            }
        }
        // Every API call is authenticated first: a refusal costs no body read and no upstream call.
        if path.starts_with("/v1/")
            && let Some(verifier) = self.gateway.verifier()
        {
            let header = session.req_header();
            match verifier.verify(&header.headers, &header.uri) {
                Ok(principal) => {
                    ctx.tenant = Some(principal.subject.clone());
                    ctx.principal = Some(principal);
                }
                Err(e) => {
                    self.gateway
                        .metrics
                        .auth_failures
                        .with_label_values(&[e.reason()])
                        .inc();
                    tracing::info!(request_id = %ctx.request_id, reason = e.reason(), "authentication refused");
                    let error = e.to_gateway_error();
                    let mut header = ResponseHeader::build(error.status(), Some(5))?;
                    let body = Bytes::from(error.body().to_json());
                    header.insert_header("content-type", "application/json")?;
                    header.insert_header("content-length", body.len().to_string())?;
                    header.insert_header("x-request-id", ctx.request_id.as_str())?;
                    header.insert_header("www-authenticate", e.www_authenticate())?;
                    session.write_response_header(Box::new(header), false).await?;
                    session.write_response_body(Some(body), true).await?;
                    return Ok(true);
                }
            }
        }
        match (method.as_str(), path.as_str()) {
            ("GET", "/healthz") => respond(session, ctx, 200, "text/plain", Bytes::from_static(b"ok")).await?,
            ("GET", "/readyz") => {
                let (status, text) = if self.gateway.is_ready() {
                    (200, "ready")
                } else {
                    (503, "draining")
                };
                respond(session, ctx, status, "text/plain", Bytes::from_static(text.as_bytes())).await?;
            }
            ("GET", "/v1/models") => {
                let config = self.gateway.config();
                let names = config
                    .models
                    .routed
                    .iter()
                    .chain([&config.edge.model, &config.center.model]);
                let list = ModelList::new(names.map(|n| ModelCard::new(n.clone(), 0, "r1-hybrid")).collect());
                let body = serde_json::to_vec(&list).unwrap_or_default();
                respond(session, ctx, 200, "application/json", Bytes::from(body)).await?;
            }
            ("POST", "/v1/chat/completions" | "/v1/r1/inference") => {
                match self.admit(session, ctx, path == "/v1/r1/inference").await {
                    Ok(Admitted::FromCache) => {}
                    Ok(Admitted::Routed) => {
                        let to_center = ctx.decision.as_ref().is_some_and(|d| d.route == Route::Center);
                        match self.gateway.handoff() {
                            Some(handoff) if to_center => {
                                crate::handoff::serve(&self.gateway, handoff, session, ctx).await?;
                            }
                            _ => return Ok(false),
                        }
                    }
                    Err(error) => self.refuse(session, ctx, &error).await?,
                }
            }
            _ if path.starts_with("/v1/tasks") || path.starts_with("/v1/batches") => {
                match self.tasks_api(session, ctx, method.as_str(), &path).await {
                    Ok(reply) => {
                        let mut header = ResponseHeader::build(reply.status, Some(4))?;
                        header.insert_header("content-type", reply.content_type)?;
                        header.insert_header("content-length", reply.body.len().to_string())?;
                        header.insert_header("x-request-id", ctx.request_id.as_str())?;
                        if let Some(location) = &reply.location {
                            header.insert_header("location", location.as_str())?;
                        }
                        session.write_response_header(Box::new(header), false).await?;
                        session.write_response_body(Some(reply.body), true).await?;
                    }
                    Err(error) => self.refuse(session, ctx, &error).await?,
                }
            }
            _ => {
                let error = GatewayError::downstream(ErrorKind::NotFound, format!("no route for {method} {path}"));
                self.refuse(session, ctx, &error).await?;
            }
        }
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let mut route = ctx.decision.as_ref().map_or(Route::Edge, |d| d.route);
        let mut selected = self.gateway.pool(route).select(&ctx.tried);
        if selected.is_none() && !ctx.pinned {
            // Nothing of this request reached any upstream yet: the other pool may take it.
            let other = if route == Route::Edge {
                Route::Center
            } else {
                Route::Edge
            };
            if let Some(backend) = self.gateway.pool(other).select(&ctx.tried)
                && let Some(mut decision) = ctx.decision.clone()
            {
                decision.route = other;
                decision.reason = r1_proto::RouteReason::FailoverUnhealthy;
                self.gateway
                    .metrics
                    .decisions
                    .with_label_values(&[other.as_str(), decision.reason.as_str()])
                    .inc();
                let config = self.gateway.config();
                if retarget(ctx, decision, &config).is_ok() {
                    ctx.in_flight = None;
                    route = other;
                    selected = Some(backend);
                }
            }
        }
        let pool = self.gateway.pool(route);
        let Some(backend) = selected else {
            let error = GatewayError::upstream(
                ErrorKind::Overloaded,
                source_of(Some(route)),
                format!("no healthy {} member is available", route.as_str()),
            )
            .retry_after(1);
            ctx.error = Some(error);
            return Err(Error::explain(HTTPStatus(503), "no healthy member"));
        };
        let address = backend.addr.to_string();
        ctx.tried.push(address.clone());
        ctx.peer = Some(address.clone());
        if ctx.in_flight.is_none() {
            ctx.in_flight = Some(pool.enter());
        }
        let config = self.gateway.config();
        let timeouts = &config.timeouts;
        let now = Instant::now();
        ctx.clock
            .get_or_insert_with(|| PhaseClock::new(timeouts, ctx.started.unwrap_or(now)))
            .sent(now);
        let tls = match route {
            Route::Edge => config.edge.tls.as_ref(),
            _ => config.center.tls.as_ref(),
        };
        let mut peer = HttpPeer::new(
            address.as_str(),
            tls.is_some(),
            tls.map_or_else(String::new, |t| t.sni.clone()),
        );
        if let Some(tls) = tls {
            peer.options.verify_cert = tls.verify;
            peer.options.verify_hostname = tls.verify;
        }
        peer.options.connection_timeout = Some(timeouts.connect);
        peer.options.read_timeout = Some(timeouts.first_token.max(timeouts.idle));
        peer.options.write_timeout = Some(timeouts.idle);
        // Pooled connections are closed before a typical upstream keep-alive (r1-edge, uvicorn: 5 s+).
        peer.options.idle_timeout = Some(std::time::Duration::from_secs(4));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream.set_uri(http::Uri::from_static("/v1/chat/completions"));
        upstream.remove_header("transfer-encoding");
        upstream.remove_header("authorization");
        upstream.insert_header("content-type", "application/json")?;
        upstream.insert_header("content-length", ctx.upstream_body.len().to_string())?;
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // The client's body was read for routing and is replayed from the retry buffer in one piece:
        // send the rewritten one instead (on every attempt).
        *body = end_of_stream.then(|| ctx.upstream_body.clone());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(d) = &ctx.decision {
            response.insert_header("x-r1-route", d.route.as_str())?;
            response.insert_header("x-r1-route-reason", d.reason.as_str())?;
        }
        let sse = response
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if sse {
            response.insert_header("x-accel-buffering", "no")?;
            response.insert_header("cache-control", "no-cache")?;
        }
        if ctx.cache_fill.is_some() {
            if response.status.as_u16() == 200 {
                let limit = self.gateway.config().cache.max_entry_bytes;
                ctx.capture = Some(if sse {
                    crate::cache::Capture::sse(limit)
                } else {
                    crate::cache::Capture::json(limit)
                });
                response.insert_header(crate::cache::RESPONSE_HEADER, "miss")?;
            } else {
                ctx.cache_fill = None; // not an answer to keep: the waiters go themselves
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if ctx.stream
            && let (Some(clock), Some(chunk)) = (ctx.clock.as_mut(), body.as_ref())
            && let Err(phase) = clock.observe(Instant::now(), deadline::has_sse_data(chunk))
        {
            // Keep-alive comments came, tokens did not: cut the exchange (closing the upstream
            // connection stops the generation) and end the stream with an error event.
            let route = ctx.decision.as_ref().map_or(Route::Edge, |d| d.route);
            ctx.timed_out = Some(phase.as_str());
            let config = self.gateway.config();
            ctx.error = Some(GatewayError::upstream(
                ErrorKind::Timeout,
                source_of(Some(route)),
                phase.message(&config.timeouts),
            ));
            *body = None;
            return Err(Error::explain(ReadTimedout, phase.as_str()));
        }
        if let (Some(capture), Some(chunk)) = (ctx.capture.as_mut(), body.as_ref()) {
            capture.push(chunk);
        }
        if end
            && let (Some(capture), Some(fill)) = (ctx.capture.take(), ctx.cache_fill.take())
            && let Some(cache) = self.gateway.cache()
        {
            match capture.finish() {
                Ok(response) => fill.complete(cache.clone(), response),
                Err(reason) => tracing::debug!(?reason, "answer not cached"),
            }
        }
        if ctx.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.first_byte = Some(Instant::now());
            if let (Some(started), Some(d)) = (ctx.started, &ctx.decision) {
                self.gateway
                    .metrics
                    .time_to_first_token
                    .with_label_values(&[d.route.as_str()])
                    .observe(started.elapsed().as_secs_f64());
            }
        }
        Ok(None)
    }

    fn fail_to_connect(&self, _session: &mut Session, peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        let route = ctx.decision.as_ref().map_or(Route::Edge, |d| d.route);
        self.gateway
            .metrics
            .upstream_errors
            .with_label_values(&[route.as_str(), "connect"])
            .inc();
        self.gateway.pool(route).report(&peer.address().to_string(), false);
        ctx.peer = None; // counted here; `logging` reports only the member that answered
        // Nothing reached the upstream or the client: another member may take it.
        if ctx.tried.len() < MAX_CONNECT_TRIES {
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer {peer}"));
        // `ReusedOnly` marks an I/O failure on a connection taken from the pool: an upstream that closed
        // it while idle (or died) never processed the request. Nothing reached the client yet either.
        let stale = client_reused
            && matches!(e.retry, pingora::RetryType::ReusedOnly)
            && session.response_written().is_none()
            && ctx.tried.len() < MAX_CONNECT_TRIES;
        e.set_retry(stale);
        if stale {
            let route = ctx.decision.as_ref().map_or(Route::Edge, |d| d.route);
            self.gateway.pool(route).report(&peer.address().to_string(), false);
            ctx.peer = None;
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let route = ctx.decision.as_ref().map(|d| d.route);
        let error = ctx.error.take().unwrap_or_else(|| {
            let source = source_of(route);
            match e.esource() {
                ErrorSource::Downstream => GatewayError::downstream(ErrorKind::InvalidRequest, e.to_string()),
                _ => match e.etype() {
                    ConnectTimedout | ReadTimedout | WriteTimedout => {
                        GatewayError::upstream(ErrorKind::Timeout, source, "the upstream model timed out")
                    }
                    ConnectRefused | ConnectNoRoute | ConnectError => {
                        GatewayError::upstream(ErrorKind::Upstream, source, "the upstream model is unreachable")
                    }
                    ConnectionClosed | ReadError | WriteError | H2Error | InvalidHTTPHeader => GatewayError::upstream(
                        ErrorKind::Upstream,
                        source,
                        "the upstream model closed the connection before finishing its answer",
                    ),
                    _ => GatewayError::upstream(ErrorKind::Upstream, source, "the upstream model failed"),
                },
            }
        });
        if let Some(route) = route
            && !matches!(e.esource(), ErrorSource::Downstream)
        {
            self.gateway
                .metrics
                .upstream_errors
                .with_label_values(&[route.as_str(), ctx.timed_out.unwrap_or("proxy")])
                .inc();
        }
        tracing::warn!(request_id = %ctx.request_id, error = %e, kind = error.kind.as_str(), "request failed");
        let code = if session.response_written().is_some() {
            // The stream already started: an in-band error event, never a synthesized [DONE].
            if ctx.stream {
                let _ = session
                    .write_response_body(Some(Bytes::from(error.body().to_sse_event())), true)
                    .await;
            }
            0
        } else if matches!(e.esource(), ErrorSource::Downstream)
            && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
        {
            0 // the client is gone
        } else {
            let _ = respond_error(session, ctx, &error).await;
            error.status()
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.decision.as_ref().map_or("none", |d| d.route.as_str());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.gateway
            .metrics
            .requests
            .with_label_values(&[route, &status_label(status)])
            .inc();
        if let Some(started) = ctx.started {
            self.gateway
                .metrics
                .latency
                .with_label_values(&[route])
                .observe(started.elapsed().as_secs_f64());
        }
        if let (Some(peer), Some(d)) = (&ctx.peer, &ctx.decision) {
            let failed = e.is_some_and(|e| !matches!(e.esource(), ErrorSource::Downstream)) || status >= 500;
            self.gateway.pool(d.route).report(peer, !failed);
        }
        ctx.in_flight = None;
    }
}
