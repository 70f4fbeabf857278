//! The request path: the Pingora hooks r1-gateway implements, in the order Pingora calls them.
//! Each hook is a few lines that call named modules — [`crate::admit`] (policy, in order),
//! [`crate::route`] (the decision), [`crate::respond`] (every response the gateway writes itself),
//! [`crate::handoff`] (the center through the task queue), [`crate::usage`] and [`crate::cache`] (what
//! the answer teaches us); see `docs/request-lifecycle.md` for the picture.
//!
//! | hook | when it runs | what we do (and Pingora's default) |
//! |---|---|---|
//! | `request_filter` | request header read | local endpoints; for the API: `admit::enter` (in-flight bound, JWT); for the chat API `admit::chat` (body, parse, hygiene, limits + cache lookup, route decision, upstream body), then a cache hit is replayed, a center request handed off and answered (`handoff` → `respond::answer`), an edge request goes on upstream; refusals through `respond::error` (default: nothing) |
//! | `upstream_peer` | before each connect attempt | a ready member of the chosen pool, skipping members already tried; none left → the other pool if nothing was sent (default: required) |
//! | `upstream_request_filter` | before the header goes upstream | path, `content-length` of the rewritten body, `x-request-id`; only allow-listed client headers go upstream — never credentials, cookies or forwarding claims (default: nothing) |
//! | `request_body_filter` | body chunks to upstream | the rewritten body replaces the client's (default: pass through) |
//! | `response_filter` | response header to the client | an upstream 5xx becomes the gateway's 502 (through `fail_to_proxy`); the upstream's `server` and `x-*` headers are dropped; `x-request-id`, `x-r1-route`, `x-r1-route-reason`; SSE gets `x-accel-buffering: no`; a 200 starts the usage tap and the cache capture (default: nothing) |
//! | `response_body_filter` | response chunks to the client | time to first token; first-token / idle / total timeouts of a stream (keep-alive comments are not tokens); usage read (and the usage chunk the client did not ask for taken out), the caller charged it at the end; the cache entry filled (default: nothing) |
//! | `fail_to_connect` | a connect failed | retry on another member: nothing was sent yet (default: no retry) |
//! | `error_while_proxy` | failure after connecting | retry only a stale pooled connection that failed before any answer (the upstream closed it while idle: nothing was processed); anything else is final, the body may have reached a live upstream (default: retry idempotent requests only) |
//! | `fail_to_proxy` | fatal error | `respond::error` — or, if the stream already started, `respond::in_band_error` and no `[DONE]` (default: bare status) |
//! | `logging` | always, last | metrics, outlier accounting (default: nothing) |

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::Peer;
use r1_proto::{CancelReason, ErrorKind, ModelCard, ModelList, Route};
use r1_telemetry::{KeyValue, SpanKind};

use crate::admit::{Admitted, Endpoint};
use crate::ctx::Ctx;
use crate::deadline::PhaseClock;
use crate::error::GatewayError;
use crate::handoff::{Handoff, Outcome, Submission};
use crate::state::Gateway;
use crate::usage::UsageTap;

/// Connect attempts per request (each on another member).
const MAX_CONNECT_TRIES: usize = 3;
/// Client request headers that go upstream (the gateway sets `content-type`, `content-length` and
/// `x-request-id` itself); every other one stays at the gateway.
const FORWARDED_HEADERS: [&str; 5] = ["host", "accept", "user-agent", "traceparent", "tracestate"];

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

/// What `request_filter` did with a request.
enum Next {
    /// Answered here.
    Answered,
    /// On its way to the edge (or center) pool over HTTP.
    Upstream,
}

impl GatewayProxy {
    /// Serves `endpoint`: a local answer, a refusal (`Err`), or a request for the upstream pools.
    async fn serve(&self, session: &mut Session, ctx: &mut Ctx, endpoint: Endpoint) -> Result<Next, GatewayError> {
        crate::admit::framing(session)?;
        if let Endpoint::Chat { shape } = endpoint {
            ctx.route.shape = shape; // its errors take that API's shape
        }
        if endpoint.is_api() {
            if self.gateway.is_closing() {
                // Shutting down, past the grace in which load balancers took this replica out: a
                // straggler goes elsewhere (the connection closes, so its next request does too).
                session.set_keepalive(None);
                return Err(GatewayError::downstream(
                    ErrorKind::Overloaded,
                    "the gateway is shutting down; retry shortly",
                )
                .retry_after(1));
            }
            crate::admit::enter(&self.gateway, session.req_header(), ctx, endpoint.is_bounded())?;
        }
        let written = match endpoint {
            Endpoint::Health => {
                self.local(session, ctx, 200, "text/plain", Bytes::from_static(b"ok"))
                    .await
            }
            Endpoint::Ready => {
                let (status, text) = if self.gateway.is_ready() {
                    (200, "ready")
                } else {
                    (503, "draining")
                };
                self.local(session, ctx, status, "text/plain", Bytes::from_static(text.as_bytes()))
                    .await
            }
            Endpoint::Models => {
                let body = Bytes::from(self.models());
                self.local(session, ctx, 200, "application/json", body).await
            }
            Endpoint::Model => {
                let path = session.req_header().uri.path();
                let id =
                    percent_encoding::percent_decode_str(path.trim_start_matches("/v1/models/")).decode_utf8_lossy();
                let body = self.model(&id).ok_or_else(|| {
                    GatewayError::downstream(ErrorKind::NotFound, format!("the model `{id}` does not exist"))
                        .code("model_not_found")
                        .param("model")
                })?;
                self.local(session, ctx, 200, "application/json", Bytes::from(body))
                    .await
            }
            Endpoint::Chat { shape } => match crate::admit::chat(&self.gateway, session, ctx, shape).await? {
                Admitted::Cached { pieces, stream } => {
                    crate::respond::cache_hit(session, ctx, pieces, stream).await;
                    Ok(())
                }
                Admitted::Routed => match self.gateway.handoff() {
                    Some(handoff) if ctx.route() == Some(Route::Center) => {
                        let handoff = handoff.clone();
                        self.hand_off(session, ctx, &handoff).await?;
                        Ok(())
                    }
                    _ => return Ok(Next::Upstream),
                },
            },
            Endpoint::Embeddings => {
                crate::admit::embeddings(&self.gateway, session, ctx).await?;
                return Ok(Next::Upstream);
            }
            Endpoint::Tasks => {
                let (method, path) = (
                    session.req_header().method.clone(),
                    session.req_header().uri.path().to_owned(),
                );
                let tenant = ctx.identity.tenant.clone();
                let config = self.gateway.config();
                let tier = ctx
                    .identity
                    .principal
                    .as_ref()
                    .and_then(|p| p.claim(&config.limits.tier_claim))
                    .map(str::to_owned);
                let traceparent = match &ctx.trace {
                    Some(trace) => Some(trace.root.traceparent().to_string()),
                    None => crate::trace::client_traceparent(session.req_header()).map(|p| p.to_string()),
                };
                let reply = crate::tasks::serve(
                    &self.gateway,
                    session,
                    &tenant,
                    tier.as_deref(),
                    traceparent.as_deref(),
                    method.as_str(),
                    &path,
                )
                .await?;
                let location = reply.location.as_deref();
                crate::respond::body(session, ctx, reply.status, reply.content_type, reply.body, location).await
            }
            Endpoint::UnknownApi | Endpoint::Unknown => {
                let header = session.req_header();
                return Err(GatewayError::downstream(
                    ErrorKind::NotFound,
                    format!("no route for {} {}", header.method, header.uri.path()),
                ));
            }
        };
        if let Err(e) = written {
            tracing::info!(request_id = %ctx.request_id, error = %e, "client went away before the answer was written");
        }
        Ok(Next::Answered)
    }

    async fn local(
        &self,
        session: &mut Session,
        ctx: &Ctx,
        status: u16,
        content_type: &str,
        body: Bytes,
    ) -> Result<()> {
        crate::respond::body(session, ctx, status, content_type, body, None).await
    }

    /// `GET /v1/models`: every model name the gateway routes or serves.
    fn models(&self) -> Vec<u8> {
        let config = self.gateway.config();
        let names = config
            .models
            .routed
            .iter()
            .chain([&config.edge.model, &config.center.model]);
        let list = ModelList::new(names.map(|n| ModelCard::new(n.clone(), 0, "r1-hybrid")).collect());
        serde_json::to_vec(&list).unwrap_or_default()
    }

    /// Answers a CORS preflight: what an allowed origin may send (before authentication: a browser's
    /// preflight carries no credentials), or a 403 without CORS headers for any other origin.
    async fn preflight(&self, session: &mut Session, ctx: &Ctx, cors: &crate::cors::CorsSection) -> Result<()> {
        let header = match &ctx.cors_origin {
            Some(origin) => crate::cors::preflight(session.req_header(), origin, cors)?,
            None => {
                let mut header = pingora::http::ResponseHeader::build(403, Some(2))?;
                header.insert_header("content-length", "0")?;
                header
            }
        };
        session.write_response_header(Box::new(header), true).await
    }

    /// The card of one model the gateway serves (`client.models.retrieve`).
    fn model(&self, id: &str) -> Option<Vec<u8>> {
        let config = self.gateway.config();
        config
            .knows_model(id)
            .then(|| serde_json::to_vec(&ModelCard::new(id.to_owned(), 0, "r1-hybrid")).unwrap_or_default())
    }

    /// A center request through the hand-off: submitted, answered as the result chunks come, then the
    /// cache filled and the caller charged what the answer used.
    async fn hand_off(&self, session: &mut Session, ctx: &mut Ctx, handoff: &Arc<Handoff>) -> Result<(), GatewayError> {
        let config = self.gateway.config();
        let Some(request) = ctx.route.request.clone() else {
            return Ok(());
        };
        let header = session
            .req_header()
            .headers
            .get(config.routing.session_header.as_str())
            .and_then(|v| v.to_str().ok());
        // Traced: r1-center's spans are children of the produce's; not traced here, the client's own
        // `traceparent` goes on (its decision not to sample included).
        let produce = ctx
            .trace
            .as_ref()
            .map(|t| t.root.child("handoff", SpanKind::Producer, SystemTime::now()));
        let traceparent = match &produce {
            Some(span) => Some(span.traceparent().to_string()),
            None => crate::trace::client_traceparent(session.req_header()).map(|p| p.to_string()),
        };
        let submission = Submission {
            session_key: crate::route::session_key(ctx.identity.tenant.as_str(), &request, header),
            request,
            tenant: ctx.identity.tenant.as_str(),
            started: ctx.started,
            config: &config,
            answered_as: &ctx.route.client_model,
            traceparent,
        };
        let submitted = handoff.submit(submission).await;
        if let Some(span) = produce {
            span.set_all(vec![
                KeyValue::new("messaging.system", "kafka"),
                KeyValue::new("messaging.operation.type", "send"),
            ]);
            match &submitted {
                Ok(answering) => {
                    span.event("send", r1_telemetry::wall_clock(answering.sending_since()), Vec::new());
                    span.set_all(vec![
                        KeyValue::new("messaging.destination.name", answering.topic()),
                        KeyValue::new("messaging.message.id", answering.task_id().to_owned()),
                    ]);
                }
                Err(e) => span.fail(e.message.clone()),
            }
            span.end(SystemTime::now());
        }
        let mut answering = submitted.inspect_err(|e| {
            tracing::warn!(request_id = %ctx.request_id, error = %e.message, "task hand-off failed");
        })?;
        let results = ctx
            .trace
            .as_ref()
            .map(|t| t.root.child("results", SpanKind::Consumer, SystemTime::now()));
        ctx.route.task_id = Some(answering.task_id().to_owned());
        if let Some(dialect) = &ctx.route.dialect {
            ctx.upstream.translator = Some(dialect.translator(&ctx.route.client_model, answering.is_stream()));
        }
        ctx.route.model_version = answering.version().map(str::to_owned);
        let outcome = crate::respond::answer(session, ctx, &mut answering).await;
        self.observe_ttft(ctx);
        if let Some(span) = results {
            // The center's span of each run of the task, as its result chunks named it.
            for center in answering.center_spans() {
                if let Some(parent) = r1_telemetry::TraceParent::parse(center) {
                    span.link(parent);
                }
            }
            if let Some(first) = ctx.upstream.first_byte {
                span.event("first_byte", r1_telemetry::wall_clock(first), Vec::new());
            }
            span.set(KeyValue::new("r1.outcome", outcome.as_str()));
            if outcome == Outcome::Failed {
                span.fail("the center's answer failed");
            }
            span.end(SystemTime::now());
        }
        if outcome == Outcome::Complete
            && let (Some(fill), Some(response), Some(cache)) =
                (ctx.cache.fill.take(), answering.take_completed(), self.gateway.cache())
        {
            fill.complete(cache.clone(), response);
        }
        if let Some(used) = answering.used_tokens() {
            ctx.policy.record_usage(used);
        }
        if outcome == Outcome::ClientGone {
            tracing::info!(request_id = %ctx.request_id, task_id = answering.task_id(), "client went away: cancelling the task");
            answering.cancel(CancelReason::ClientDisconnected).await;
        }
        Ok(())
    }

    /// Answers a request the gateway itself refuses (counted in `r1_rejected_requests_total`).
    async fn refuse(&self, session: &mut Session, ctx: &Ctx, error: &GatewayError) -> Result<()> {
        self.gateway
            .metrics
            .rejected
            .with_label_values(&[error.kind.as_str()])
            .inc();
        tracing::info!(
            request_id = %ctx.request_id,
            kind = error.kind.as_str(),
            source = error.source.as_str(),
            message = %error.message,
            "refused"
        );
        if let Some(trace) = &ctx.trace {
            trace.error(error);
        }
        crate::respond::error(session, ctx, error).await
    }

    /// What the request became, on its server span.
    fn trace_attributes(&self, ctx: &Ctx) -> Vec<r1_telemetry::KeyValue> {
        use r1_telemetry::KeyValue;
        let mut attributes = vec![KeyValue::new("r1.tenant", ctx.identity.tenant.as_str().to_owned())];
        if let Some(decision) = &ctx.route.decision {
            attributes.push(KeyValue::new("r1.route", decision.route.as_str()));
            attributes.push(KeyValue::new("r1.route_reason", decision.reason.as_str()));
        }
        if !ctx.route.client_model.is_empty() {
            attributes.push(KeyValue::new("gen_ai.request.model", ctx.route.client_model.clone()));
        }
        if let Some(task_id) = &ctx.route.task_id {
            attributes.push(KeyValue::new("r1.task_id", task_id.clone()));
        }
        if let Some(first) = ctx.upstream.first_byte {
            let ttft = first.saturating_duration_since(ctx.started).as_secs_f64();
            attributes.push(KeyValue::new("r1.time_to_first_byte_s", ttft));
        }
        attributes
    }

    /// Time to first token, once the first body bytes reached the client.
    fn observe_ttft(&self, ctx: &Ctx) {
        if let (Some(first), Some(route)) = (ctx.upstream.first_byte, ctx.route()) {
            self.gateway
                .metrics
                .time_to_first_token
                .with_label_values(&[route.as_str()])
                .observe(first.saturating_duration_since(ctx.started).as_secs_f64());
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

#[async_trait]
impl ProxyHttp for GatewayProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.request_id = crate::request_id::of(session.req_header());
        let endpoint = Endpoint::of(session.req_header());
        if endpoint.is_api() {
            // Probes (`/healthz`, `/readyz`) are not traced: they would drown the requests.
            ctx.trace = crate::trace::RequestTrace::begin(
                &self.gateway.telemetry,
                session.req_header(),
                endpoint.route(),
                ctx.started,
                &ctx.request_id,
            );
        }
        // Only a browser's request has an `Origin`: the others skip CORS without looking at the config.
        if session.req_header().headers.contains_key("origin") {
            let config = self.gateway.config();
            ctx.cors_origin = config.cors.allowed(session.req_header());
            if crate::cors::is_preflight(session.req_header()) {
                self.preflight(session, ctx, &config.cors).await?;
                return Ok(true);
            }
        }
        match self.serve(session, ctx, endpoint).await {
            Ok(Next::Upstream) => Ok(false),
            Ok(Next::Answered) => Ok(true),
            Err(error) => {
                self.refuse(session, ctx, &error).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        // A new attempt: what the last one decided (a busy member) no longer answers the request.
        let after_busy = std::mem::take(&mut ctx.upstream.busy);
        ctx.upstream.error = None;
        let mut route = ctx.route().unwrap_or(Route::Edge);
        let mut selected = self.gateway.pool(route).select(&ctx.upstream.tried);
        if selected.is_none() && !ctx.route.pinned {
            // Nothing of this request reached any upstream yet: the other pool may take it.
            let other = if route == Route::Edge {
                Route::Center
            } else {
                Route::Edge
            };
            if let Some(backend) = self.gateway.pool(other).select(&ctx.upstream.tried)
                && let Some(mut decision) = ctx.route.decision.clone()
            {
                decision.route = other;
                // Ready members that said they are busy, or none ready (or left untried) at all.
                let state = self.gateway.pool(route).state();
                decision.reason = if after_busy || (state.healthy && state.saturated) {
                    r1_proto::RouteReason::FailoverSaturated
                } else {
                    r1_proto::RouteReason::FailoverUnhealthy
                };
                self.gateway
                    .metrics
                    .decisions
                    .with_label_values(&[other.as_str(), decision.reason.as_str()])
                    .inc();
                let config = self.gateway.config();
                if crate::admit::retarget(&mut ctx.route, decision, &config).is_ok() {
                    ctx.upstream.in_flight = None;
                    route = other;
                    selected = Some(backend);
                }
            }
        }
        let pool = self.gateway.pool(route);
        let Some(backend) = selected else {
            let state = pool.state();
            let message = if after_busy || (state.healthy && state.saturated) {
                format!("every {} member is busy; retry shortly", route.as_str())
            } else {
                format!("no healthy {} member is available", route.as_str())
            };
            let error = GatewayError::upstream(ErrorKind::Overloaded, ctx.source(), message).retry_after(1);
            ctx.upstream.error = Some(error);
            ctx.upstream.shed = true;
            return Err(Error::explain(HTTPStatus(503), "no healthy member"));
        };
        let address = backend.addr.to_string();
        if let Some(trace) = ctx.trace.as_mut() {
            trace.attempt(route.as_str(), &address);
        }
        ctx.upstream.tried.push(address.clone());
        ctx.upstream.peer = Some(address.clone());
        if ctx.upstream.in_flight.is_none() {
            ctx.upstream.in_flight = Some(pool.enter());
        }
        let config = self.gateway.config();
        let timeouts = &config.timeouts;
        let now = Instant::now();
        let started = ctx.started;
        ctx.upstream
            .clock
            .get_or_insert_with(|| PhaseClock::new(timeouts, started))
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
        upstream.set_uri(http::Uri::from_static(
            ctx.route.upstream_path.unwrap_or("/v1/chat/completions"),
        ));
        // An allow-list: the client's credentials, cookies, forwarding claims it could spoof, and an
        // encoding that no longer matches the rewritten body never go upstream.
        let dropped: Vec<http::HeaderName> = upstream
            .headers
            .keys()
            .filter(|name| !FORWARDED_HEADERS.contains(&name.as_str()))
            .cloned()
            .collect();
        for name in dropped {
            upstream.remove_header(&name);
        }
        upstream.insert_header("content-type", "application/json")?;
        upstream.insert_header("content-length", ctx.route.upstream_body.len().to_string())?;
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(traceparent) = ctx
            .trace
            .as_ref()
            .and_then(crate::trace::RequestTrace::upstream_traceparent)
        {
            // The upstream's spans are children of this exchange's (the client's `tracestate` goes on).
            upstream.insert_header(r1_telemetry::traceparent::HEADER, traceparent)?;
        }
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
        *body = end_of_stream.then(|| ctx.route.upstream_body.clone());
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let status = response.status.as_u16();
        if status == 429 || status == 503 {
            // The member is busy (a full or slow queue, draining, a provider's rate limit): it did not
            // take the request. It is skipped for its Retry-After, and another member or the other pool
            // takes the request (`error_while_proxy`); nothing of it reached the client yet.
            let retry_after = response
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let route = ctx.route().unwrap_or(Route::Edge);
            if let Some(peer) = &ctx.upstream.peer {
                self.gateway
                    .pool(route)
                    .busy(peer, retry_after.map(std::time::Duration::from_secs));
            }
            self.gateway
                .metrics
                .upstream_errors
                .with_label_values(&[route.as_str(), "busy"])
                .inc();
            ctx.upstream.busy = true;
            ctx.upstream.error = Some(
                GatewayError::upstream(
                    ErrorKind::Overloaded,
                    ctx.source(),
                    format!("the {} is busy; retry shortly", route.as_str()),
                )
                .retry_after(retry_after.unwrap_or(1).clamp(1, crate::pools::MAX_BUSY.as_secs())),
            );
            return Err(Error::explain(HTTPStatus(503), "upstream member busy"));
        }
        if status >= 500 {
            // An upstream failure is the gateway's 502 with an OpenAI body (`fail_to_proxy`): the
            // upstream's own body and headers (addresses, versions) never reach the client. It does not
            // count towards ejecting the member: a client can provoke such an answer (an input that
            // crashes the server), and the health checks judge a member that fails everything.
            ctx.upstream.answered_5xx = true;
            ctx.upstream.error = Some(GatewayError::upstream(
                ErrorKind::Upstream,
                ctx.source(),
                format!("the upstream model failed (HTTP {status})"),
            ));
            return Err(Error::explain(HTTPStatus(502), "upstream answered 5xx"));
        }
        // The upstream's identity and private headers stay inside.
        let private: Vec<http::HeaderName> = response
            .headers
            .keys()
            .filter(|name| name.as_str() == "server" || name.as_str().starts_with("x-"))
            .cloned()
            .collect();
        for name in private {
            response.remove_header(&name);
        }
        response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(d) = &ctx.route.decision {
            response.insert_header("x-r1-route", d.route.as_str())?;
            response.insert_header("x-r1-route-reason", d.reason.as_str())?;
        }
        if let Some(model) = ctx.route.upstream_model() {
            response.insert_header("x-r1-model", model)?;
        }
        if let Some(origin) = &ctx.cors_origin {
            crate::cors::allow(response, origin)?;
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
        if response.status.as_u16() == 200 {
            let asked_usage = ctx
                .route
                .request
                .as_ref()
                .is_some_and(r1_proto::ChatCompletionRequest::include_usage);
            ctx.upstream.usage = Some(if sse {
                UsageTap::sse(!asked_usage)
            } else {
                UsageTap::json()
            });
            // The answer names the model the client asked for (the pool's is in `x-r1-model`).
            if let Some(model) = ctx.route.upstream_model() {
                ctx.upstream.rename = crate::rename::ModelRename::new(model, &ctx.route.client_model);
            }
        }
        // An answer in another API's shape (and, for Anthropic's, a model server's refusal too).
        if (status == 200 || ctx.route.shape.reshapes_errors())
            && let Some(dialect) = &ctx.route.dialect
        {
            ctx.upstream.translator = Some(dialect.translator(&ctx.route.client_model, sse && status == 200));
        }
        let resized = ctx.upstream.translator.is_some()
            || ctx
                .upstream
                .rename
                .as_ref()
                .is_some_and(crate::rename::ModelRename::changes_length);
        if resized && response.headers.contains_key("content-length") {
            response.remove_header("content-length");
            response.insert_header("transfer-encoding", "chunked")?;
        }
        if ctx.cache.fill.is_some() {
            if response.status.as_u16() == 200 {
                let limit = self.gateway.config().cache.max_entry_bytes;
                ctx.cache.capture = Some(if sse {
                    crate::cache::Capture::sse(limit)
                } else {
                    crate::cache::Capture::json(limit)
                });
                response.insert_header(crate::cache::RESPONSE_HEADER, "miss")?;
            } else {
                ctx.cache.fill = None; // not an answer to keep: the waiters go themselves
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
        if ctx.route.stream
            && let (Some(clock), Some(chunk)) = (ctx.upstream.clock.as_mut(), body.as_ref())
            && let Err(phase) = clock.observe_sse(Instant::now(), chunk)
        {
            // Keep-alive comments came, tokens did not: cut the exchange (closing the upstream
            // connection stops the generation) and end the stream with an error event.
            ctx.upstream.timed_out = Some(phase.as_str());
            let config = self.gateway.config();
            ctx.upstream.error = Some(GatewayError::upstream(
                ErrorKind::Timeout,
                ctx.source(),
                phase.message(&config.timeouts),
            ));
            *body = None;
            return Err(Error::explain(ReadTimedout, phase.as_str()));
        }
        if let (Some(capture), Some(chunk)) = (ctx.cache.capture.as_mut(), body.as_ref()) {
            capture.push(chunk);
        }
        if let Some(tap) = ctx.upstream.usage.as_mut() {
            tap.observe(body);
        }
        if let Some(rename) = ctx.upstream.rename.as_mut() {
            rename.rewrite(body, end);
        }
        if let Some(translator) = ctx.upstream.translator.as_mut() {
            translator.rewrite(body, end);
        }
        if end {
            if let (Some(capture), Some(fill)) = (ctx.cache.capture.take(), ctx.cache.fill.take())
                && let Some(cache) = self.gateway.cache()
            {
                match capture.finish() {
                    Ok(response) => fill.complete(cache.clone(), response),
                    Err(reason) => tracing::debug!(?reason, "answer not cached"),
                }
            }
            if let Some(used) = ctx.upstream.usage.take().and_then(|tap| tap.total_tokens()) {
                ctx.policy.record_usage(used);
            }
        }
        if ctx.upstream.first_byte.is_none() && body.as_ref().is_some_and(|b| !b.is_empty()) {
            ctx.upstream.first_byte = Some(Instant::now());
            self.observe_ttft(ctx);
        }
        Ok(None)
    }

    fn fail_to_connect(&self, _session: &mut Session, peer: &HttpPeer, ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
        let route = ctx.route().unwrap_or(Route::Edge);
        self.gateway
            .metrics
            .upstream_errors
            .with_label_values(&[route.as_str(), "connect"])
            .inc();
        self.gateway.pool(route).report(&peer.address().to_string(), false);
        ctx.upstream.peer = None; // counted here; `logging` reports only the member that answered
        // Nothing reached the upstream or the client: another member may take it.
        if ctx.upstream.tried.len() < MAX_CONNECT_TRIES {
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
        // A retry replays the body from Pingora's retry buffer: never one that overflowed it (the proxy
        // path takes bodies up to that buffer's size; this keeps a truncated replay impossible).
        let replayable = session.response_written().is_none()
            && !session.as_ref().retry_buffer_truncated()
            && ctx.upstream.tried.len() < MAX_CONNECT_TRIES;
        if ctx.upstream.busy {
            e.set_retry(replayable);
            ctx.upstream.peer = None; // not an outlier, and not the member that answered
            return e;
        }
        let stale = client_reused && matches!(e.retry, pingora::RetryType::ReusedOnly) && replayable;
        e.set_retry(stale);
        if stale {
            let route = ctx.route().unwrap_or(Route::Edge);
            self.gateway.pool(route).report(&peer.address().to_string(), false);
            ctx.upstream.peer = None;
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let error = ctx.upstream.error.take().unwrap_or_else(|| {
            let source = ctx.source();
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
        if ctx.upstream.shed {
            // Nothing went upstream: the gateway refused it (every member busy, or none healthy).
            self.gateway
                .metrics
                .rejected
                .with_label_values(&[error.kind.as_str()])
                .inc();
        } else if let Some(route) = ctx.route()
            && !matches!(e.esource(), ErrorSource::Downstream)
            && !ctx.upstream.busy
        {
            self.gateway
                .metrics
                .upstream_errors
                .with_label_values(&[route.as_str(), ctx.upstream.timed_out.unwrap_or("proxy")])
                .inc();
        }
        tracing::warn!(
            request_id = %ctx.request_id,
            error = %e,
            kind = error.kind.as_str(),
            source = error.source.as_str(),
            "request failed"
        );
        if let Some(trace) = &ctx.trace {
            trace.error(&error);
        }
        if session.response_written().is_some()
            && let (Some(streamed), Some(request)) = (
                ctx.upstream
                    .usage
                    .as_ref()
                    .and_then(crate::usage::UsageTap::streamed_tokens),
                ctx.route.request.as_ref(),
            )
        {
            // A stream cut midway (the model died, a limit cut it, the client left) is charged its prompt
            // and what it streamed, not its whole reservation.
            let prompt = crate::limits::LimitsSection::prompt_tokens(request);
            ctx.policy.record_usage(prompt.saturating_add(streamed));
            ctx.upstream.usage = None;
        }
        let code = if session.response_written().is_some() {
            // The stream already started: an in-band error event, never a synthesized [DONE].
            if ctx.route.stream {
                crate::respond::in_band_error(session, ctx, &error).await;
            }
            0
        } else if matches!(e.esource(), ErrorSource::Downstream)
            && matches!(e.etype(), WriteError | ReadError | ConnectionClosed)
        {
            0 // the client is gone
        } else {
            // The connection is not reused after a failed exchange: the answer says so, so a client
            // never sends its next request into a connection that is closing.
            session.set_keepalive(None);
            let _ = crate::respond::error(session, ctx, &error).await;
            error.status()
        };
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let route = ctx.route().map_or("none", Route::as_str);
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.gateway
            .metrics
            .requests
            .with_label_values(&[route, &status_label(status)])
            .inc();
        self.gateway
            .metrics
            .latency
            .with_label_values(&[route])
            .observe(ctx.started.elapsed().as_secs_f64());
        if let (Some(peer), Some(route)) = (&ctx.upstream.peer, ctx.route()) {
            // Passive outlier detection counts what the member did, not what a request made it answer:
            // transport failures and timeouts, never its HTTP answers (4xx or 5xx).
            let failed = !ctx.upstream.answered_5xx
                && !ctx.upstream.busy
                && e.is_some_and(|e| !matches!(e.esource(), ErrorSource::Downstream));
            self.gateway.pool(route).report(peer, !failed);
        }
        ctx.upstream.in_flight = None;
        if let Some(trace) = ctx.trace.take() {
            trace.finish(status, self.trace_attributes(ctx));
        }
    }
}
