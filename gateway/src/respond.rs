//! The one writer of the responses the gateway makes itself: error answers (OpenAI body, with
//! `retry-after` and `www-authenticate` when the error carries them), local endpoints and task replies,
//! cache-hit replays, the hand-off's answers (SSE or JSON), and the in-band SSE `error` event that ends a
//! stream which already started. Proxied answers are Pingora's to write; their headers get the same
//! `x-request-id`/`x-r1-route`/`x-r1-route-reason` in `proxy::response_filter`.
//!
//! Every function here only writes: what to answer was decided before (in `admit`, `tasks`, the hand-off).

use std::time::Instant;

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;

use crate::ctx::Ctx;
use crate::error::GatewayError;
use crate::handoff::{AnswerEvent, Answering, Outcome};

/// A response header with the gateway's own headers: the request id and, once decided, the route, the
/// task and the model version.
fn head(ctx: &Ctx, status: u16, content_type: &str) -> Result<ResponseHeader> {
    let mut header = ResponseHeader::build(status, Some(8))?;
    header.insert_header("content-type", content_type)?;
    header.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(d) = &ctx.route.decision {
        header.insert_header("x-r1-route", d.route.as_str())?;
        header.insert_header("x-r1-route-reason", d.reason.as_str())?;
    }
    if let (Some(d), Some(request)) = (&ctx.route.decision, &ctx.route.request)
        && d.route != r1_proto::Route::Cache
    {
        header.insert_header("x-r1-model", request.model.as_str())?;
    }
    if let Some(origin) = &ctx.cors_origin {
        crate::cors::allow(&mut header, origin)?;
    }
    if let Some(task) = &ctx.route.task_id {
        header.insert_header("x-r1-task-id", task.as_str())?;
    }
    if let Some(version) = &ctx.route.model_version {
        header.insert_header("x-r1-model-version", version.as_str())?;
    }
    Ok(header)
}

/// A complete response of `body`; `location` for a created resource.
pub async fn body(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    content_type: &str,
    body: Bytes,
    location: Option<&str>,
) -> Result<()> {
    let mut header = head(ctx, status, content_type)?;
    header.insert_header("content-length", body.len().to_string())?;
    if let Some(location) = location {
        header.insert_header("location", location)?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The error's status and OpenAI body.
pub async fn error(session: &mut Session, ctx: &Ctx, error: &GatewayError) -> Result<()> {
    let body = Bytes::from(ctx.route.shape.error_body(error));
    let mut header = head(ctx, error.status(), "application/json")?;
    header.insert_header("content-length", body.len().to_string())?;
    if let Some(seconds) = error.retry_after {
        header.insert_header("retry-after", seconds.to_string())?;
    }
    if let Some(challenge) = error.challenge {
        header.insert_header("www-authenticate", challenge)?;
    }
    session.write_response_header(Box::new(header), false).await?;
    session.write_response_body(Some(body), true).await
}

/// Ends a stream that already started with an in-band `error` event (in the API the client asked
/// through) — never a `[DONE]`.
pub async fn in_band_error(session: &mut Session, ctx: &mut Ctx, error: &GatewayError) {
    let event = match ctx.upstream.translator.as_mut() {
        Some(translator) => translator.error_event(error),
        None => error.body().to_sse_event(),
    };
    let _ = session.write_response_body(Some(Bytes::from(event)), true).await;
}

/// The header of an event stream the gateway writes itself.
fn sse_head(ctx: &Ctx) -> Result<ResponseHeader> {
    let mut header = head(ctx, 200, "text/event-stream")?;
    header.insert_header("cache-control", "no-cache")?;
    header.insert_header("transfer-encoding", "chunked")?;
    header.insert_header("x-accel-buffering", "no")?;
    Ok(header)
}

/// Replays a cached answer: one JSON body, or the SSE events of a stream (in the API the client asked
/// through). A client that goes away meanwhile is only logged.
pub async fn cache_hit(session: &mut Session, ctx: &Ctx, mut pieces: Vec<Bytes>, stream: bool) {
    if let Some(dialect) = &ctx.route.dialect {
        let mut translator = dialect.translator(&ctx.route.client_model, stream);
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.iter_mut().enumerate() {
            let mut body = Some(std::mem::take(piece));
            translator.rewrite(&mut body, i == last);
            *piece = body.unwrap_or_default();
        }
    }
    let write = async {
        let mut header = if stream {
            sse_head(ctx)?
        } else {
            let mut header = head(ctx, 200, "application/json")?;
            let length: usize = pieces.iter().map(Bytes::len).sum();
            header.insert_header("content-length", length.to_string())?;
            header
        };
        header.insert_header(crate::cache::RESPONSE_HEADER, "hit")?;
        session.write_response_header(Box::new(header), false).await?;
        let last = pieces.len().saturating_sub(1);
        for (i, piece) in pieces.into_iter().enumerate() {
            session.write_response_body(Some(piece), i == last).await?;
        }
        Ok::<(), Box<Error>>(())
    };
    if let Err(e) = write.await {
        tracing::info!(request_id = %ctx.request_id, error = %e, "client went away during a cache hit");
    }
}

/// Writes the hand-off's answer as it comes — SSE events (the header before the first of them), or one
/// JSON response at the end; an error is a status while nothing was written and an in-band event after.
/// Watches the client meanwhile: one that goes away ends the answer ([`Outcome::ClientGone`]).
/// `ctx.upstream.first_byte` is set when the first bytes reach the client.
pub async fn answer(session: &mut Session, ctx: &mut Ctx, answering: &mut Answering) -> Outcome {
    let mut header_sent = false;
    let mut watch_client = true;
    loop {
        let event = tokio::select! {
            event = answering.next() => match event {
                Some(event) => event,
                None => return Outcome::Failed,
            },
            closed = session.read_body_or_idle(true), if watch_client => {
                match closed {
                    Err(_) => return Outcome::ClientGone,
                    Ok(_) => watch_client = false, // bytes from a pipelining client: stop watching
                }
                continue;
            }
        };
        let event = translate(ctx, event);
        let (written, token) = match event {
            AnswerEvent::Stream(bytes) => (write_stream(session, ctx, &mut header_sent, bytes, false).await, true),
            AnswerEvent::KeepAlive(bytes) => (write_stream(session, ctx, &mut header_sent, bytes, false).await, false),
            AnswerEvent::Done(bytes) if answering.is_stream() => {
                let written = write_stream(session, ctx, &mut header_sent, bytes, true).await;
                mark_first_byte(ctx);
                return if written {
                    Outcome::Complete
                } else {
                    Outcome::ClientGone
                };
            }
            AnswerEvent::Done(json) => {
                let written = body(session, ctx, 200, "application/json", json, None).await.is_ok();
                mark_first_byte(ctx);
                return if written {
                    Outcome::Complete
                } else {
                    Outcome::ClientGone
                };
            }
            AnswerEvent::Failed(failure) => {
                tracing::warn!(
                    request_id = %ctx.request_id,
                    kind = failure.kind.as_str(),
                    source = failure.source.as_str(),
                    message = %failure.message,
                    "center answer failed"
                );
                if header_sent {
                    in_band_error(session, ctx, &failure).await;
                } else {
                    let _ = error(session, ctx, &failure).await;
                }
                return Outcome::Failed;
            }
        };
        if !written {
            return Outcome::ClientGone;
        }
        if token {
            mark_first_byte(ctx);
        }
    }
}

/// The event in the API the client asked through, when it was not chat.
fn translate(ctx: &mut Ctx, event: AnswerEvent) -> AnswerEvent {
    let Some(translator) = ctx.upstream.translator.as_mut() else {
        return event;
    };
    let mut translate = |bytes: Bytes, end: bool| {
        let mut body = Some(bytes);
        translator.rewrite(&mut body, end);
        body.unwrap_or_default()
    };
    match event {
        AnswerEvent::Stream(bytes) => AnswerEvent::Stream(translate(bytes, false)),
        AnswerEvent::Done(bytes) => AnswerEvent::Done(translate(bytes, true)),
        other => other,
    }
}

fn mark_first_byte(ctx: &mut Ctx) {
    ctx.upstream.first_byte.get_or_insert_with(Instant::now);
}

/// Writes stream bytes (the header first, once). `false`: the client is gone.
async fn write_stream(session: &mut Session, ctx: &Ctx, header_sent: &mut bool, bytes: Bytes, end: bool) -> bool {
    if !*header_sent {
        let Ok(header) = sse_head(ctx) else { return false };
        if session.write_response_header(Box::new(header), false).await.is_err() {
            return false;
        }
        *header_sent = true;
    }
    session.write_response_body(Some(bytes), end).await.is_ok()
}
