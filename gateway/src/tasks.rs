//! Asynchronous tasks and batches, on the task hand-off (batch-class tasks, `r1.tasks.batch`).
//!
//! - `POST /v1/tasks` — body `{"request": <chat completion request>, "webhook": "https://…"}` (or a
//!   bare chat completion request) → `202 {"id", "object": "r1.task", "status": "queued", …}`.
//!   The state is written (Redis, TTL) *before* the task is handed over; if the store does not
//!   answer, the answer is 503 — never a 202 for a task that could be lost.
//! - `GET /v1/tasks/{id}` → status, and `result` (a chat completion) or `error` once final.
//! - `DELETE /v1/tasks/{id}` → cancelled (a cancel record stops the center node's work).
//! - `POST /v1/batches` — a JSONL body in the OpenAI Batch input shape, one
//!   `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {…}}` per line → the
//!   batch object (`status`, `request_counts`). Every line is checked first; one bad line refuses
//!   the batch with the line number.
//! - `GET /v1/batches/{id}` → status and counts; `GET /v1/batches/{id}/output` → JSONL of the
//!   finished lines keyed by `custom_id`, in the OpenAI Batch output shape.
//!
//! Tasks and batches belong to the caller (the JWT subject once authentication is on): another
//! caller gets 404, not 403 — it does not learn that the id exists.

use std::time::Duration;

use bytes::Bytes;
use r1_proto::{CancelReason, CancelRecord, ChatCompletionRequest, ErrorKind, TaskClass, TaskEnvelope, WIRE_VERSION};
use r1_queue::state::{BatchState, TaskState, TaskStatus, update_task};
use serde_json::{Value, json};

use pingora::proxy::Session;

use crate::config::GatewayConfig;
use crate::ctx::Tenant;
use crate::error::{GatewayError, Source};
use crate::handoff::Handoff;
use crate::hygiene::Hygiene;
use crate::state::Gateway;

/// How long task and batch state is kept (the center node keeps the states it writes as long).
pub use r1_queue::state::TASK_STATE_TTL as STATE_TTL;
/// How long an asynchronous task may wait and run before it is dropped as expired.
pub const TASK_DEADLINE: Duration = Duration::from_secs(86_400);
/// Lines in one batch.
pub use r1_queue::state::MAX_BATCH_LINES;

/// An answer: status, JSON or JSONL body, extra headers.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `application/json` or `application/jsonl`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
    /// `Location` of a created resource.
    pub location: Option<String>,
}

fn json_reply(status: u16, value: &Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
        location: None,
    }
}

fn store_down(e: impl std::fmt::Display) -> GatewayError {
    tracing::warn!(error = %e, "task state store unavailable");
    GatewayError::upstream(
        ErrorKind::Overloaded,
        Source::Queue,
        "the task store is unavailable; try again",
    )
    .retry_after(1)
}

fn not_found(what: &str, id: &str) -> GatewayError {
    GatewayError::downstream(ErrorKind::NotFound, format!("no {what} `{id}`"))
}

/// The API view of a task.
fn task_view(state: &TaskState) -> Value {
    let mut v = json!({
        "id": state.id,
        "object": "r1.task",
        "status": state.status,
        "created_at": state.created_at,
        "updated_at": state.updated_at,
    });
    if let Some(result) = &state.result {
        v["result"] = result.clone();
    }
    if let Some(error) = &state.error {
        v["error"] = json!({"code": error.code.as_str(), "message": error.message});
    }
    if let Some((batch, custom_id)) = &state.batch {
        v["batch_id"] = json!(batch);
        v["custom_id"] = json!(custom_id);
    }
    v
}

/// Parses and checks a chat request for the center — the same input hygiene and `max_tokens` cap
/// as an interactive request; the model becomes the center's.
fn center_request(config: &GatewayConfig, hygiene: &Hygiene, value: Value) -> Result<ChatCompletionRequest, String> {
    let mut request: ChatCompletionRequest =
        serde_json::from_value(value).map_err(|e| format!("not a valid chat completion request: {e}"))?;
    if !config.knows_model(&request.model) {
        return Err(format!("the model `{}` does not exist", request.model));
    }
    if request.messages.is_empty() {
        return Err("`messages` must not be empty".to_owned());
    }
    r1_proto::validate(&request).map_err(|e| e.message)?;
    hygiene.check(&mut request).map_err(|e| e.to_gateway_error().message)?;
    config.limits.check_max_tokens(&request).map_err(|e| e.message)?;
    request.model.clone_from(&config.center.model);
    request.stream = None; // the answer is stored, not streamed
    request.stream_options = None;
    Ok(request)
}

/// A task's `webhook`: absent, or an http(s) URL — on a public address unless `private_networks`
/// (a name is checked by r1-center against what it resolves to, when it calls).
fn webhook_of(value: &Value, private_networks: bool) -> Result<Option<String>, GatewayError> {
    let url = match value.get("webhook") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(url)) => url,
        Some(_) => return Err(invalid("`webhook` must be an http(s) URL").param("webhook")),
    };
    let Some(host) = r1_proto::net::http_host(url) else {
        return Err(invalid("`webhook` must be an http(s) URL with a host").param("webhook"));
    };
    let private = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !r1_proto::net::is_public(ip),
        Err(_) => host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost"),
    };
    if private && !private_networks {
        return Err(invalid(format!(
            "`webhook` must be on a public address; `{host}` is not (`tasks.webhook_private_networks` allows \
             receivers inside the deployment's network)"
        ))
        .param("webhook")
        .code("webhook_not_public"));
    }
    Ok(Some(url.clone()))
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::downstream(ErrorKind::InvalidRequest, message)
}

fn envelope(
    handoff: &Handoff,
    id: &str,
    tenant: &str,
    request: ChatCompletionRequest,
    webhook: Option<String>,
) -> TaskEnvelope {
    let now = r1_queue::unix_ms();
    TaskEnvelope {
        v: WIRE_VERSION,
        task_id: id.to_owned(),
        created_at: now,
        deadline: now + u64::try_from(TASK_DEADLINE.as_millis()).unwrap_or(u64::MAX),
        reply_to: handoff.reply_to(),
        tenant: tenant.to_owned(),
        class: TaskClass::Batch,
        request,
        attempt: 0,
        model_version: None,
        affinity_key: Some(id.to_owned()),
        webhook,
        traceparent: None,
    }
}

fn queued(id: &str, tenant: &str, batch: Option<(String, String)>, webhook: Option<String>) -> TaskState {
    let now = r1_queue::unix_ms() / 1000;
    TaskState {
        id: id.to_owned(),
        tenant: tenant.to_owned(),
        status: TaskStatus::Queued,
        created_at: now,
        updated_at: now,
        batch,
        webhook,
        result: None,
        error: None,
    }
}

/// Serves `method path` of the tasks and batches API for `tenant` (of limits tier `tier`), reading the
/// body it needs (bounded by `limits.max_body_bytes`, 16 × for a batch). A task or batch passes the
/// caller's limits as a chat request does: one request against `requests_per_second`, its estimated
/// tokens (a batch: all its lines') reserved against `tokens_per_minute` — a batch needing more than one
/// minute's budget is refused, to be split.
pub async fn serve(
    gateway: &Gateway,
    session: &mut Session,
    tenant: &Tenant,
    tier: Option<&str>,
    traceparent: Option<&str>,
    method: &str,
    path: &str,
) -> Result<Reply, GatewayError> {
    let Some(handoff) = gateway.handoff() else {
        return Err(GatewayError::downstream(
            ErrorKind::NotFound,
            "asynchronous tasks need the task hand-off (center.transport = \"kafka\" or \"embedded\")",
        ));
    };
    let config = gateway.config();
    let tenant = tenant.as_str();
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        ("POST", ["v1", "tasks"]) => {
            let body = crate::admit::read_body(session, config.limits.body_limit(), config.limits.body_timeout).await?;
            let admit = Admit {
                gateway,
                tier,
                traceparent,
            };
            create_task(&config, &gateway.hygiene(), handoff, tenant, &body, admit).await
        }
        ("GET", ["v1", "tasks", id]) => get_task(handoff, tenant, id).await,
        ("DELETE", ["v1", "tasks", id]) => cancel_task(handoff, tenant, id).await,
        ("POST", ["v1", "batches"]) => {
            let body =
                crate::admit::read_body(session, config.limits.batch_body_limit(), config.limits.body_timeout).await?;
            let admit = Admit {
                gateway,
                tier,
                traceparent,
            };
            create_batch(&config, &gateway.hygiene(), handoff, tenant, &body, admit).await
        }
        ("GET", ["v1", "batches", id]) => get_batch(handoff, tenant, id).await,
        ("GET", ["v1", "batches", id, "output"]) => batch_output(handoff, tenant, id).await,
        _ => Err(GatewayError::downstream(
            ErrorKind::NotFound,
            format!("no route for {method} {path}"),
        )),
    }
}

/// The caller's limits, for a task or a batch about to be accepted, and the trace its tasks continue.
#[derive(Debug, Clone, Copy)]
pub struct Admit<'a> {
    gateway: &'a Gateway,
    tier: Option<&'a str>,
    /// The W3C `traceparent` the tasks' center spans take as their parent.
    traceparent: Option<&'a str>,
}

impl Admit<'_> {
    /// Takes one request and `estimated` tokens of `tenant`'s limits, or refuses (429 + Retry-After). What
    /// the answer really uses is not known here: the reservation stands, as for a request whose usage is
    /// unknown.
    async fn take(&self, tenant: &str, estimated: u64) -> Result<(), GatewayError> {
        let config = self.gateway.config();
        if let Some(budget) = config.limits.for_tier(self.tier).tokens_per_minute
            && estimated > budget
        {
            return Err(invalid(format!(
                "this needs an estimated {estimated} tokens, more than your budget of {budget} tokens per minute: \
                 split it into smaller batches"
            ))
            .code("tokens_over_budget"));
        }
        let admission = self
            .gateway
            .limiter
            .admit_tier(tenant, self.tier, estimated)
            .await
            .map_err(|r| r.to_gateway_error())?;
        drop(admission); // the concurrency slot is the request's, not the task's; the tokens stay reserved
        Ok(())
    }
}

/// `POST /v1/tasks`.
pub async fn create_task(
    config: &GatewayConfig,
    hygiene: &Hygiene,
    handoff: &Handoff,
    tenant: &str,
    body: &[u8],
    admit: Admit<'_>,
) -> Result<Reply, GatewayError> {
    let store = handoff
        .states()
        .ok_or_else(|| store_down("no task store is configured or connected"))?;
    let mut value: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let (request, webhook) = if let Some(request) = value.get("request") {
        (
            request.clone(),
            webhook_of(&value, config.tasks.webhook_private_networks)?,
        )
    } else if value.get("prompt").is_some() && value.get("messages").is_none() {
        // The simple prompt shape (`/v1/r1/inference`'s), with an optional webhook beside it.
        let webhook = webhook_of(&value, config.tasks.webhook_private_networks)?;
        if let Some(object) = value.as_object_mut() {
            object.remove("webhook");
        }
        let simple: r1_proto::InferenceRequest =
            serde_json::from_value(value).map_err(|e| invalid(format!("not a valid prompt request: {e}")))?;
        let model = config.models.routed.first().map_or("r1-hybrid", String::as_str);
        let chat = serde_json::to_value(simple.into_chat_request(model))
            .map_err(|e| invalid(format!("not a valid prompt request: {e}")))?;
        (chat, webhook)
    } else {
        (value, None)
    };
    let request = center_request(config, hygiene, request).map_err(|m| invalid(m).param("request"))?;
    admit.take(tenant, config.limits.estimated_tokens(&request)).await?;
    let id = format!("task_{}", uuid::Uuid::new_v4().simple());
    let state = queued(&id, tenant, None, webhook.clone());
    store.put_task(&state, STATE_TTL).await.map_err(store_down)?;
    let mut task = envelope(handoff, &id, tenant, request, webhook);
    task.traceparent = admit.traceparent.map(str::to_owned);
    if let Err(e) = handoff.submit_batch(&id, &task).await {
        // Not handed over: the state says so, and the client is told to retry.
        let _ = update_task(store.as_ref().as_ref(), &id, STATE_TTL, |s| {
            s.status = TaskStatus::Failed;
            s.error = Some(r1_proto::TaskError::new(
                r1_proto::TaskErrorCode::Overloaded,
                e.to_string(),
                true,
            ));
        })
        .await;
        return Err(GatewayError::upstream(
            ErrorKind::Overloaded,
            Source::Queue,
            format!("the task queue did not take the task: {e}"),
        )
        .retry_after(1));
    }
    let mut reply = json_reply(202, &task_view(&state));
    reply.location = Some(format!("/v1/tasks/{id}"));
    Ok(reply)
}

/// `GET /v1/tasks/{id}`.
pub async fn get_task(handoff: &Handoff, tenant: &str, id: &str) -> Result<Reply, GatewayError> {
    let store = handoff.states().ok_or_else(|| store_down("no task store"))?;
    match store.task(id).await.map_err(store_down)? {
        Some(state) if state.tenant == tenant => Ok(json_reply(200, &task_view(&state))),
        _ => Err(not_found("task", id)),
    }
}

/// `DELETE /v1/tasks/{id}`.
pub async fn cancel_task(handoff: &Handoff, tenant: &str, id: &str) -> Result<Reply, GatewayError> {
    let store = handoff.states().ok_or_else(|| store_down("no task store"))?;
    match store.task(id).await.map_err(store_down)? {
        Some(state) if state.tenant == tenant => {
            let state = update_task(store.as_ref().as_ref(), id, STATE_TTL, |s| {
                s.status = TaskStatus::Cancelled
            })
            .await
            .map_err(store_down)?
            .unwrap_or(state);
            let record = CancelRecord::new(id, CancelReason::ClientCancelled, r1_queue::unix_ms());
            if let Err(e) = handoff.cancel(&record).await {
                tracing::warn!(task_id = %id, error = %e, "cancel record not published; the task may still run");
            }
            Ok(json_reply(200, &task_view(&state)))
        }
        _ => Err(not_found("task", id)),
    }
}

/// `POST /v1/batches`.
pub async fn create_batch(
    config: &GatewayConfig,
    hygiene: &Hygiene,
    handoff: &Handoff,
    tenant: &str,
    body: &[u8],
    admit: Admit<'_>,
) -> Result<Reply, GatewayError> {
    let store = handoff.states().ok_or_else(|| store_down("no task store"))?;
    let text = std::str::from_utf8(body).map_err(|_| invalid("the batch body is not UTF-8"))?;
    let mut lines = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let at = |m: String| invalid(format!("line {}: {m}", n + 1));
        let v: Value = serde_json::from_str(line).map_err(|e| at(format!("not JSON: {e}")))?;
        let custom_id = v["custom_id"]
            .as_str()
            .ok_or_else(|| at("`custom_id` is required".into()))?
            .to_owned();
        if !seen.insert(custom_id.clone()) {
            return Err(at(format!("`custom_id` `{custom_id}` is used twice")));
        }
        if v["method"].as_str().is_some_and(|m| m != "POST") {
            return Err(at("`method` must be POST".into()));
        }
        if v["url"].as_str().is_some_and(|u| u != "/v1/chat/completions") {
            return Err(at("`url` must be /v1/chat/completions".into()));
        }
        let request = center_request(config, hygiene, v["body"].clone()).map_err(at)?;
        lines.push((custom_id, request));
        if lines.len() > MAX_BATCH_LINES {
            return Err(invalid(format!("a batch holds at most {MAX_BATCH_LINES} lines")));
        }
    }
    if lines.is_empty() {
        return Err(invalid("the batch has no lines"));
    }
    let estimated = lines
        .iter()
        .map(|(_, request)| config.limits.estimated_tokens(request))
        .fold(0u64, u64::saturating_add);
    admit.take(tenant, estimated).await?;
    let batch_id = format!("batch_{}", uuid::Uuid::new_v4().simple());
    let ids: Vec<(String, String)> = lines
        .iter()
        .map(|(custom_id, _)| (custom_id.clone(), format!("task_{}", uuid::Uuid::new_v4().simple())))
        .collect();
    let batch = BatchState {
        id: batch_id.clone(),
        tenant: tenant.to_owned(),
        created_at: r1_queue::unix_ms() / 1000,
        lines: ids.clone(),
    };
    for (custom_id, id) in &ids {
        let state = queued(id, tenant, Some((batch_id.clone(), custom_id.clone())), None);
        store.put_task(&state, STATE_TTL).await.map_err(store_down)?;
    }
    store.put_batch(&batch, STATE_TTL).await.map_err(store_down)?;
    for ((_, id), (_, request)) in ids.iter().zip(lines) {
        let mut task = envelope(handoff, id, tenant, request, None);
        task.traceparent = admit.traceparent.map(str::to_owned);
        if let Err(e) = handoff.submit_batch(id, &task).await {
            let _ = update_task(store.as_ref().as_ref(), id, STATE_TTL, |s| {
                s.status = TaskStatus::Failed;
                s.error = Some(r1_proto::TaskError::new(
                    r1_proto::TaskErrorCode::Overloaded,
                    e.to_string(),
                    true,
                ));
            })
            .await;
        }
    }
    let view = batch_view(
        &batch,
        &store
            .tasks(&ids.iter().map(|(_, id)| id.clone()).collect::<Vec<_>>())
            .await
            .map_err(store_down)?,
    );
    let mut reply = json_reply(200, &view);
    reply.location = Some(format!("/v1/batches/{batch_id}"));
    Ok(reply)
}

fn batch_view(batch: &BatchState, states: &[Option<TaskState>]) -> Value {
    let total = batch.lines.len();
    let completed = states
        .iter()
        .flatten()
        .filter(|s| s.status == TaskStatus::Succeeded)
        .count();
    let failed = states
        .iter()
        .flatten()
        .filter(|s| matches!(s.status, TaskStatus::Failed | TaskStatus::Cancelled))
        .count();
    let status = if completed + failed == total {
        "completed"
    } else {
        "in_progress"
    };
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "status": status,
        "created_at": batch.created_at,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "output_url": format!("/v1/batches/{}/output", batch.id),
    })
}

async fn load_batch(
    handoff: &Handoff,
    tenant: &str,
    id: &str,
) -> Result<(BatchState, Vec<Option<TaskState>>), GatewayError> {
    let store = handoff.states().ok_or_else(|| store_down("no task store"))?;
    let batch = match store.batch(id).await.map_err(store_down)? {
        Some(b) if b.tenant == tenant => b,
        _ => return Err(not_found("batch", id)),
    };
    let ids: Vec<String> = batch.lines.iter().map(|(_, id)| id.clone()).collect();
    let states = store.tasks(&ids).await.map_err(store_down)?;
    Ok((batch, states))
}

/// `GET /v1/batches/{id}`.
pub async fn get_batch(handoff: &Handoff, tenant: &str, id: &str) -> Result<Reply, GatewayError> {
    let (batch, states) = load_batch(handoff, tenant, id).await?;
    Ok(json_reply(200, &batch_view(&batch, &states)))
}

/// `GET /v1/batches/{id}/output`: one JSONL line per finished request, keyed by `custom_id`.
pub async fn batch_output(handoff: &Handoff, tenant: &str, id: &str) -> Result<Reply, GatewayError> {
    let (batch, states) = load_batch(handoff, tenant, id).await?;
    let mut out = Vec::new();
    for ((custom_id, task_id), state) in batch.lines.iter().zip(states) {
        let Some(state) = state.filter(|s| s.status.is_final()) else {
            continue;
        };
        let line = match (&state.result, &state.error) {
            (Some(body), _) => json!({
                "id": format!("batch_req_{task_id}"),
                "custom_id": custom_id,
                "response": {"status_code": 200, "request_id": task_id, "body": body},
                "error": null,
            }),
            (None, error) => json!({
                "id": format!("batch_req_{task_id}"),
                "custom_id": custom_id,
                "response": null,
                "error": error.as_ref().map_or_else(
                    || json!({"code": "cancelled", "message": "the request was cancelled"}),
                    |e| json!({"code": e.code.as_str(), "message": e.message}),
                ),
            }),
        };
        out.extend(serde_json::to_vec(&line).unwrap_or_default());
        out.push(b'\n');
    }
    Ok(Reply {
        status: 200,
        content_type: "application/jsonl",
        body: Bytes::from(out),
        location: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook(url: &str, private_networks: bool) -> Result<Option<String>, GatewayError> {
        webhook_of(&json!({"webhook": url}), private_networks)
    }

    #[test]
    fn a_webhook_on_a_private_address_is_refused_at_submit_unless_allowed() {
        for url in [
            "https://hooks.example.com/r1",
            "http://93.184.216.34:8080/x",
            "https://[2606:4700::1111]/",
        ] {
            assert_eq!(webhook(url, false).unwrap().as_deref(), Some(url));
        }
        for url in [
            "http://127.0.0.1:9000/hook",
            "http://10.1.2.3/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://[::1]:9/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://localhost:8080/",
            "http://api.localhost/",
            "http://user@192.168.0.10/",
        ] {
            let e = webhook(url, false).unwrap_err();
            assert_eq!(e.status(), 400, "{url}");
            assert_eq!(e.param, Some("webhook"), "{url}");
            assert_eq!(e.code, Some("webhook_not_public"), "{url}");
            assert_eq!(
                webhook(url, true).unwrap().as_deref(),
                Some(url),
                "allowed with private networks"
            );
        }
        for url in ["ftp://example.com/", "http://", "not a url"] {
            assert_eq!(webhook(url, true).unwrap_err().param, Some("webhook"), "{url}");
        }
        assert_eq!(webhook_of(&json!({}), false).unwrap(), None);
    }
}
