//! Admission: a request's policy, in order, before anything is answered or sent upstream —
//!
//! 1. [`enter`]: the global in-flight bound (503 + `Retry-After`, before anything else), then the JWT
//!    (401 with `WWW-Authenticate`: no body read, no upstream call);
//! 2. [`chat`]: the body, bounded by `limits.max_body_bytes` (413 before it is all read); parse; model
//!    and messages; input hygiene; the `max_tokens` cap (400); the caller's limits (429 + `Retry-After`)
//!    with the result-cache lookup alongside (one Redis round trip); then the route decision and the
//!    upstream body for the chosen pool.
//!
//! Each step returns what was decided — an [`Admitted`] request or a [`GatewayError`] — and fills the
//! request's [`Ctx`]; nothing here writes a response (`respond` does).

use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use r1_proto::{
    ChatCompletionRequest, ErrorKind, InferenceRequest, Route, RouteDecision, RouteReason, StreamOptions, Tier,
};

use r1_telemetry::KeyValue;

use crate::cache::{Cache, CacheKey, Lookup};
use crate::config::GatewayConfig;
use crate::ctx::{CacheFill, Ctx, Routing, Tenant};
use crate::dialect::Dialect;
pub use crate::dialect::Shape;
use crate::error::{GatewayError, Source};
use crate::route::RequestFacts;
use crate::state::Gateway;

/// Largest body that can be proxied over HTTP (Pingora replays the request body from its 64 KiB retry
/// buffer after we have read it for routing). Larger requests can only go through the hand-off.
pub const MAX_PROXIED_BODY_BYTES: usize = 64 * 1024;

/// What a request asks for, by method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`.
    Health,
    /// `GET /readyz`.
    Ready,
    /// `GET /v1/models`.
    Models,
    /// `GET /v1/models/{id}` (the id may hold `/`, raw or as `%2F`).
    Model,
    /// `POST /v1/chat/completions`, `/v1/r1/inference`, `/v1/completions`, `/v1/responses` or
    /// `/v1/messages`: a chat request in one of its shapes.
    Chat {
        /// Which API it came through.
        shape: Shape,
    },
    /// `POST /v1/embeddings`: proxied to a pool that declares embeddings.
    Embeddings,
    /// `/v1/tasks…` and `/v1/batches…`.
    Tasks,
    /// Anything else under `/v1/` (404 after authentication).
    UnknownApi,
    /// Anything else (404).
    Unknown,
}

impl Endpoint {
    /// The endpoint of `header`.
    pub fn of(header: &RequestHeader) -> Self {
        let path = header.uri.path();
        match (header.method.as_str(), path) {
            ("GET", "/healthz") => Self::Health,
            ("GET", "/readyz") => Self::Ready,
            ("GET", "/v1/models") => Self::Models,
            ("GET", p) if p.starts_with("/v1/models/") => Self::Model,
            ("POST", "/v1/chat/completions") => Self::Chat { shape: Shape::Chat },
            ("POST", "/v1/r1/inference") => Self::Chat {
                shape: Shape::Inference,
            },
            ("POST", "/v1/completions") => Self::Chat {
                shape: Shape::Completions,
            },
            ("POST", "/v1/responses") => Self::Chat {
                shape: Shape::Responses,
            },
            ("POST", "/v1/messages") => Self::Chat { shape: Shape::Messages },
            ("POST", "/v1/embeddings") => Self::Embeddings,
            _ if path.starts_with("/v1/tasks") || path.starts_with("/v1/batches") => Self::Tasks,
            _ if path.starts_with("/v1/") => Self::UnknownApi,
            _ => Self::Unknown,
        }
    }

    /// Whether it is the API (authenticated).
    pub fn is_api(self) -> bool {
        !matches!(self, Self::Health | Self::Ready | Self::Unknown)
    }

    /// Its route, as a trace's span names it (`None` where the path holds ids or is unknown).
    pub fn route(self) -> Option<&'static str> {
        Some(match self {
            Self::Health => "/healthz",
            Self::Ready => "/readyz",
            Self::Models => "/v1/models",
            Self::Model => "/v1/models/{model}",
            Self::Chat { shape } => match shape {
                Shape::Chat => "/v1/chat/completions",
                Shape::Inference => "/v1/r1/inference",
                Shape::Completions => "/v1/completions",
                Shape::Responses => "/v1/responses",
                Shape::Messages => "/v1/messages",
            },
            Self::Embeddings => "/v1/embeddings",
            Self::Tasks | Self::UnknownApi | Self::Unknown => return None,
        })
    }

    /// Whether it takes one of the `max_in_flight` places: everything of the API but the model list and
    /// cards, answered from memory at once (so they answer even when the gateway is full).
    pub fn is_bounded(self) -> bool {
        self.is_api() && !matches!(self, Self::Models | Self::Model)
    }
}

/// Step 0 for every request: a request whose framing a front proxy could read differently is refused
/// and its connection closed, so no byte after it is ever read as another request (request smuggling,
/// desync). Pingora refuses conflicting lengths, `Transfer-Encoding` other than `chunked` and obs-folds
/// itself and closes; here: bare LF line ends in the head (httparse takes them, many proxies do not),
/// and protocol upgrades (none is served; the bytes after an `Upgrade` are not HTTP).
pub fn framing(session: &mut Session) -> Result<(), GatewayError> {
    let refuse = |session: &mut Session, message: &str| {
        session.set_keepalive(None);
        Err(GatewayError::downstream(ErrorKind::InvalidRequest, message.to_owned()))
    };
    if let pingora::protocols::http::ServerSession::H1(h1) = session.as_downstream() {
        let head = h1.get_headers_raw_bytes();
        let bare_lf = memchr::memchr_iter(b'\n', &head).any(|at| at == 0 || head[at - 1] != b'\r');
        if bare_lf {
            return refuse(session, "the request head must end its lines with CRLF");
        }
    }
    if session.is_upgrade_req() {
        return refuse(session, "protocol upgrades are not served here");
    }
    Ok(())
}

/// Step 1 for an API request: a place under the global in-flight bound (`bounded`), then the caller's
/// identity, then its place among its `concurrent_requests` here — all before any body is read.
pub fn enter(gateway: &Gateway, header: &RequestHeader, ctx: &mut Ctx, bounded: bool) -> Result<(), GatewayError> {
    if bounded {
        ctx.policy.in_flight = Some(gateway.limiter.try_enter().map_err(|r| r.to_gateway_error())?);
    }
    let Some(verifier) = gateway.verifier() else {
        return hold(gateway, ctx);
    };
    let since = Instant::now();
    let verified = verifier.verify(&header.headers, &header.uri);
    if let Some(trace) = &ctx.trace {
        let outcome = verified.as_ref().map_or_else(|e| e.reason(), |_| "ok");
        trace.phase("auth", since, vec![KeyValue::new("r1.auth", outcome)]);
    }
    match verified {
        Ok(principal) => {
            ctx.identity.tenant = Tenant::new(&principal.subject);
            ctx.identity.principal = Some(principal);
            hold(gateway, ctx)
        }
        Err(e) => {
            gateway.metrics.auth_failures.with_label_values(&[e.reason()]).inc();
            tracing::info!(request_id = %ctx.request_id, reason = e.reason(), "authentication refused");
            Err(e.to_gateway_error())
        }
    }
}

/// The caller's place among its `concurrent_requests` in this replica, before any body is read.
fn hold(gateway: &Gateway, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let config = gateway.config();
    let tier = ctx
        .identity
        .principal
        .as_ref()
        .and_then(|p| p.claim(&config.limits.tier_claim));
    let hold = gateway
        .limiter
        .hold(ctx.identity.tenant.as_str(), tier)
        .map_err(|r| r.to_gateway_error())?;
    ctx.policy.hold = Some(hold);
    Ok(())
}

/// How a chat request was admitted.
#[derive(Debug)]
pub enum Admitted {
    /// Answered by the result cache: the body to replay (one JSON piece, or SSE events).
    Cached {
        /// The pieces, in order.
        pieces: Vec<Bytes>,
        /// Whether they are SSE events.
        stream: bool,
    },
    /// Routed to a pool (`ctx.route` holds the decision and the upstream body).
    Routed,
}

/// Step 2: reads and checks a chat API request, applies the caller's limits, looks the answer up in the
/// cache, decides the route and prepares the upstream body.
pub async fn chat(
    gateway: &Gateway,
    session: &mut Session,
    ctx: &mut Ctx,
    shape: Shape,
) -> Result<Admitted, GatewayError> {
    let config = gateway.config();
    refuse_form_body(session.req_header())?;
    let since = Instant::now();
    let body = read_body(session, config.limits.body_limit(), config.limits.body_timeout).await;
    if let Some(trace) = &ctx.trace {
        let bytes = body.as_ref().map_or(0, |b| i64::try_from(b.len()).unwrap_or(i64::MAX));
        trace.phase("read_body", since, vec![KeyValue::new("http.request.body.size", bytes)]);
    }
    let body = body?;
    // A request we cannot forward over HTTP is refused before it is routed — unless the center takes
    // tasks through the hand-off, which carries any body up to the gateway's limit.
    let too_big_to_proxy = session.retry_buffer_truncated() || body.len() > MAX_PROXIED_BODY_BYTES;
    if too_big_to_proxy && gateway.handoff().is_none() {
        return Err(GatewayError::downstream(
            ErrorKind::PayloadTooLarge,
            format!("requests over {MAX_PROXIED_BODY_BYTES} bytes cannot be proxied over HTTP"),
        ));
    }
    ctx.route.shape = shape;
    let (mut request, dialect) = parse(&config, &body, shape)?;
    ctx.route.dialect = dialect;
    ctx.route.client_model.clone_from(&request.model);
    let cleaned = gateway
        .hygiene()
        .check(&mut request)
        .map_err(|e| e.to_gateway_error())?;
    config.limits.check_max_tokens(&request)?;
    if shape == Shape::Chat && !cleaned.changed() {
        ctx.route.client_body = Some(body.clone());
    }

    if let Some(pieces) = limits_and_cache(gateway, &config, session, ctx, &request).await? {
        return Ok(Admitted::Cached {
            stream: request.is_stream(),
            pieces,
        });
    }

    let since = Instant::now();
    let decided = gateway.router.decide(
        &config,
        &request,
        &HeaderFacts(session.req_header(), ctx),
        gateway.pool_states(),
    );
    if let Some(trace) = &ctx.trace {
        let d = &decided.decision;
        let mut attributes = vec![
            KeyValue::new("r1.route", d.route.as_str()),
            KeyValue::new("r1.route_reason", d.reason.as_str()),
            KeyValue::new("r1.score", f64::from(d.score)),
        ];
        if let Some(unmet) = &decided.unservable {
            attributes.push(KeyValue::new("r1.unservable", unmet.as_str()));
        }
        trace.phase("route", since, attributes);
    }
    if let Some(unmet) = decided.unservable {
        gateway.metrics.unservable.with_label_values(&[unmet.as_str()]).inc();
        tracing::info!(request_id = %ctx.request_id, unmet = unmet.as_str(), "no pool serves the request");
        return Err(GatewayError::downstream(ErrorKind::InvalidRequest, unmet.describe()).param(unmet.param()));
    }
    let decision = decided.decision;
    gateway
        .metrics
        .decisions
        .with_label_values(&[decision.route.as_str(), decision.reason.as_str()])
        .inc();
    if let Some(shadow) = &decided.shadow {
        gateway
            .metrics
            .shadow_decisions
            .with_label_values(&[shadow.route.as_str(), shadow.reason.as_str()])
            .inc();
    }
    if too_big_to_proxy && decision.route == Route::Edge {
        return Err(GatewayError::downstream(
            ErrorKind::PayloadTooLarge,
            format!("requests over {MAX_PROXIED_BODY_BYTES} bytes can only be served by the center"),
        ));
    }
    let route = &mut ctx.route;
    route.pinned = request.model == config.edge.model || request.model == config.center.model;
    route.stream = request.is_stream();
    route.request = Some(request);
    retarget(route, decision, &config)?;
    Ok(Admitted::Routed)
}

/// Step 2 for `POST /v1/embeddings`: reads and checks the request, applies the caller's limits and
/// points it at the pool that declares embeddings (`edge.capabilities.embeddings`, else
/// `center.capabilities.embeddings`), its `model` rewritten to that pool's. Not scored, not cached, and
/// pinned to that pool; none declaring it is a 404 naming the keys.
pub async fn embeddings(gateway: &Gateway, session: &mut Session, ctx: &mut Ctx) -> Result<(), GatewayError> {
    let config = gateway.config();
    refuse_form_body(session.req_header())?;
    let body = read_body(session, config.limits.body_limit(), config.limits.body_timeout).await?;
    if session.retry_buffer_truncated() || body.len() > MAX_PROXIED_BODY_BYTES {
        return Err(GatewayError::downstream(
            ErrorKind::PayloadTooLarge,
            format!("requests over {MAX_PROXIED_BODY_BYTES} bytes cannot be proxied over HTTP"),
        ));
    }
    let invalid = |message: &str| GatewayError::downstream(ErrorKind::InvalidRequest, message.to_owned());
    let Ok(serde_json::Value::Object(mut request)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Err(invalid(
            "not a valid embeddings request: the body must be a JSON object",
        ));
    };
    let model = request
        .get("model")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| invalid("`model` is required").param("model"))?
        .to_owned();
    if !config.knows_model(&model) {
        return Err(
            GatewayError::downstream(ErrorKind::NotFound, format!("the model `{model}` does not exist"))
                .code("model_not_found")
                .param("model"),
        );
    }
    let input_bytes = match request.get("input") {
        Some(serde_json::Value::String(text)) if !text.is_empty() => text.len(),
        Some(serde_json::Value::Array(items)) if !items.is_empty() => items.iter().map(|i| i.to_string().len()).sum(),
        _ => return Err(invalid("`input` must be a non-empty string or list").param("input")),
    };
    let route = if config.edge.capabilities.embeddings {
        Route::Edge
    } else if config.center.capabilities.embeddings {
        Route::Center
    } else {
        return Err(GatewayError::downstream(
            ErrorKind::NotFound,
            "no pool here serves embeddings: set `edge.capabilities.embeddings = true` (or \
             `center.capabilities.embeddings` with center.transport = \"http\") for a pool whose model \
             servers answer POST /v1/embeddings",
        )
        .code("embeddings_not_configured"));
    };
    let tier = ctx
        .identity
        .principal
        .as_ref()
        .and_then(|p| p.claim(&config.limits.tier_claim));
    let estimated = u64::try_from(input_bytes / 4 + 1).unwrap_or(u64::MAX);
    let admission = gateway
        .limiter
        .admit_tier(ctx.identity.tenant.as_str(), tier, estimated)
        .await
        .map_err(|refusal| refusal.to_gateway_error())?;
    ctx.policy.admission = Some(admission);
    let pool_model = match route {
        Route::Edge => config.edge.model.clone(),
        _ => config.center.model.clone(),
    };
    request.insert("model".to_owned(), serde_json::Value::from(pool_model.as_str()));
    let decision = RouteDecision::new(route, 0.0, Tier::Uncertain, RouteReason::Embeddings);
    gateway
        .metrics
        .decisions
        .with_label_values(&[decision.route.as_str(), decision.reason.as_str()])
        .inc();
    let routing = &mut ctx.route;
    routing.decision = Some(decision);
    routing.pinned = true;
    routing.client_model = model;
    routing.pool_model = Some(pool_model);
    routing.upstream_path = Some("/v1/embeddings");
    routing.upstream_body = Bytes::from(serde_json::to_vec(&request).unwrap_or_default());
    Ok(())
}

/// A form-encoded body is not JSON, whatever it holds: OpenAI's API refuses it, and so does the gateway
/// (a body without `Content-Type` is read as JSON).
fn refuse_form_body(header: &RequestHeader) -> Result<(), GatewayError> {
    let Some(content_type) = header.headers.get("content-type").and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let media = content_type.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/x-www-form-urlencoded")
        || media.eq_ignore_ascii_case("multipart/form-data")
    {
        return Err(GatewayError::downstream(
            ErrorKind::InvalidRequest,
            format!("the body must be JSON sent with `Content-Type: application/json`, not `{media}`"),
        )
        .code("invalid_content_type"));
    }
    Ok(())
}

/// The request in the body as a chat request, for a model the gateway knows; with what its answer's
/// translator needs when it came through another API than chat.
fn parse(
    config: &GatewayConfig,
    body: &[u8],
    shape: Shape,
) -> Result<(ChatCompletionRequest, Option<Dialect>), GatewayError> {
    let mut dialect = None;
    let request: ChatCompletionRequest = if shape == Shape::Completions {
        dialect = Some(Dialect::Completions);
        crate::legacy::to_chat(body)?
    } else if shape == Shape::Responses {
        let (request, echo) = crate::responses::to_chat(body)?;
        dialect = Some(Dialect::Responses(echo));
        request
    } else if shape == Shape::Messages {
        let (request, thinking) = crate::messages::to_chat(body)?;
        dialect = Some(Dialect::Messages(thinking));
        request
    } else if shape == Shape::Inference {
        let simple: InferenceRequest = serde_json::from_slice(body).map_err(|e| {
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
        serde_json::from_slice(body).map_err(|e| {
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
    r1_proto::validate(&request).map_err(invalid_parameter)?;
    Ok((request, dialect))
}

/// OpenAI's 400 for a parameter out of range or out of place.
pub fn invalid_parameter(invalid: r1_proto::Invalid) -> GatewayError {
    GatewayError::downstream(ErrorKind::InvalidRequest, invalid.message)
        .param(invalid.param)
        .code(invalid.code)
}

/// The caller's limits, with the cache lookup at the same time (both ask Redis: one round trip on the
/// path). A hit is returned as the body to replay; a hit still counts against the caller's limits.
async fn limits_and_cache(
    gateway: &Gateway,
    config: &GatewayConfig,
    session: &Session,
    ctx: &mut Ctx,
    request: &ChatCompletionRequest,
) -> Result<Option<Vec<Bytes>>, GatewayError> {
    let cached = cache_key(gateway, session, ctx, request);
    let estimated = config.limits.estimated_tokens(request);
    // A tier claim in the token picks that tier's limits.
    let tier = ctx
        .identity
        .principal
        .as_ref()
        .and_then(|p| p.claim(&config.limits.tier_claim));
    let admit = timed(
        gateway
            .limiter
            .admit_tier(ctx.identity.tenant.as_str(), tier, estimated),
    );
    let since = Instant::now();
    let ((admission, admitted_at), lookup) = match &cached {
        Some((cache, key)) => {
            let (admission, lookup) = tokio::join!(admit, timed(cache.lookup(key)));
            (admission, Some(lookup))
        }
        None => (admit.await, None),
    };
    if let Some(trace) = &ctx.trace {
        let outcome = admission
            .as_ref()
            .map_or_else(|r| r.to_gateway_error().kind.as_str(), |_| "admitted");
        trace.phase_between(
            "admission",
            (since, admitted_at),
            vec![KeyValue::new("r1.admission", outcome)],
        );
        if let Some((lookup, looked_at)) = &lookup {
            let outcome = match lookup {
                Lookup::Hit(_) => "hit",
                Lookup::Leader(_) | Lookup::Miss(_) => "miss",
            };
            trace.phase_between("cache", (since, *looked_at), vec![KeyValue::new("r1.cache", outcome)]);
        }
    }
    let lookup = lookup.map(|(lookup, _)| lookup);
    ctx.policy.admission = Some(admission.map_err(|refusal| refusal.to_gateway_error())?);
    let (Some((cache, key)), Some(lookup)) = (cached, lookup) else {
        return Ok(None);
    };
    match lookup {
        Lookup::Hit(stored) => {
            let decision = RouteDecision::new(Route::Cache, 0.0, Tier::Uncertain, RouteReason::CacheHit);
            gateway
                .metrics
                .decisions
                .with_label_values(&[decision.route.as_str(), decision.reason.as_str()])
                .inc();
            ctx.route.decision = Some(decision);
            // Nothing was generated: the caller's token budget gets its reservation back.
            ctx.policy.record_usage(0);
            Ok(Some(if request.is_stream() {
                cache.hit_sse(&stored, request)
            } else {
                vec![cache.hit_json(&stored, request)]
            }))
        }
        Lookup::Leader(guard) => {
            ctx.cache.fill = Some(CacheFill::Leader(guard));
            Ok(None)
        }
        Lookup::Miss(_) => {
            ctx.cache.fill = Some(CacheFill::Key(key));
            Ok(None)
        }
    }
}

/// `work`'s output and when it came.
async fn timed<T>(work: impl Future<Output = T>) -> (T, Instant) {
    let output = work.await;
    (output, Instant::now())
}

/// The cache and key of a request that may be cached.
fn cache_key(
    gateway: &Gateway,
    session: &Session,
    ctx: &Ctx,
    request: &ChatCompletionRequest,
) -> Option<(Cache, CacheKey)> {
    let cache = gateway.cache()?;
    cache.cacheable(request, &session.req_header().headers)?;
    let key = cache.key(ctx.identity.tenant.as_str(), request)?;
    Some((cache.clone(), key))
}

/// Points the request at `decision`'s pool: its model name in the upstream body — spliced into the
/// client's bytes where it can be ([`crate::splice`]), else the request written out again. A stream
/// asks the upstream for its usage chunk even when the client did not (the caller is charged what was
/// generated; `usage::UsageTap` hides that chunk from such a client).
pub fn retarget(route: &mut Routing, decision: RouteDecision, config: &GatewayConfig) -> Result<(), GatewayError> {
    if let Some(request) = route.request.as_mut() {
        request.model = match decision.route {
            Route::Edge => config.edge.model.clone(),
            _ => config.center.model.clone(),
        };
        let add_usage = request.is_stream() && !request.include_usage();
        let spliced = route
            .client_body
            .as_deref()
            .and_then(|body| crate::splice::model(body, &request.model, add_usage));
        if let Some(body) = spliced {
            route.upstream_body = Bytes::from(body);
            route.decision = Some(decision);
            return Ok(());
        }
        let asked = request.stream_options.clone();
        if add_usage {
            let mut options = asked.clone().unwrap_or(StreamOptions {
                include_usage: None,
                extra: serde_json::Map::new(),
            });
            options.include_usage = Some(true);
            request.stream_options = Some(options);
        }
        let body = serde_json::to_vec(request);
        request.stream_options = asked;
        route.upstream_body = Bytes::from(body.map_err(|e| {
            GatewayError::upstream(
                ErrorKind::Internal,
                Source::Internal,
                format!("serializing the upstream request: {e}"),
            )
        })?);
    }
    route.decision = Some(decision);
    Ok(())
}

/// Reads the whole request body, refusing more than `limit` bytes (`limits.max_body_bytes`) before
/// reading it all: a declared length over it is refused at once, an undeclared one as soon as it passes.
pub async fn read_body(session: &mut Session, limit: usize, within: Duration) -> Result<Bytes, GatewayError> {
    match tokio::time::timeout(within, read_body_bounded(session, limit)).await {
        Ok(read) => read,
        Err(_) => {
            // Part of the body is unread: nothing after it can be read as a request.
            session.set_keepalive(None);
            Err(GatewayError::downstream(
                ErrorKind::RequestTimeout,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(within)
                ),
            ))
        }
    }
}

async fn read_body_bounded(session: &mut Session, limit: usize) -> Result<Bytes, GatewayError> {
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
    // The declared length is the client's word: reserve at most 64 KiB before bytes arrive (300 sockets
    // declaring 16 MiB must not reserve 4.8 GB), then grow with what came.
    let mut body = Vec::with_capacity(declared.unwrap_or(1024).min(limit).min(64 << 10));
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
                // Where the body ends is unknown: nothing after it can be read as a request.
                session.set_keepalive(None);
                return Err(GatewayError::downstream(
                    ErrorKind::InvalidRequest,
                    format!("reading the request body: {e}"),
                ));
            }
        }
    }
}

/// Headers, token claims and tenant of the client request, for routing rules and the session key.
struct HeaderFacts<'a>(&'a RequestHeader, &'a Ctx);

impl RequestFacts for HeaderFacts<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.0.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn claim(&self, name: &str) -> Option<&str> {
        self.1.identity.principal.as_ref().and_then(|p| p.claim(name))
    }
    fn tenant(&self) -> &str {
        self.1.identity.tenant.as_str()
    }
}
