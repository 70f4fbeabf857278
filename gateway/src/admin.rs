//! The admin listener (never the public one): `/metrics`, `POST /admin/route/explain`, `GET /admin/pools`.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::json;

use crate::route::NoFacts;
use crate::state::Gateway;

/// Largest `explain` request body.
const MAX_EXPLAIN_BODY: usize = 1 << 20;

/// The admin application.
#[derive(Debug, Clone)]
pub struct AdminApp {
    gateway: Arc<Gateway>,
}

impl AdminApp {
    /// The admin app over shared gateway state.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .body(body)
        .unwrap_or_default()
}

fn json_reply(status: u16, value: &serde_json::Value) -> Response<Vec<u8>> {
    reply(
        status,
        "application/json",
        serde_json::to_vec(value).unwrap_or_default(),
    )
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.as_str().to_owned();
        let path = session.req_header().uri.path().to_owned();
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                // In-flight counts live in the pools; the gauge is read at scrape time.
                for (name, pool) in [("edge", &self.gateway.edge), ("center", &self.gateway.center)] {
                    self.gateway
                        .metrics
                        .in_flight
                        .with_label_values(&[name])
                        .set(pool.in_flight() as i64);
                }
                reply(200, "text/plain; version=0.0.4", self.gateway.metrics.render())
            }
            ("GET", "/admin/pools") => {
                let config = self.gateway.config();
                json_reply(
                    200,
                    &json!({
                        "mode": format!("{:?}", config.routing.mode).to_lowercase(),
                        "weights": { "edge": config.routing.weights.edge, "center": config.routing.weights.center },
                        "edge_max": config.routing.edge_max,
                        "center_min": config.routing.center_min,
                        "pools": [self.gateway.edge.status(), self.gateway.center.status()],
                        "handoff": self.gateway.handoff().map(|h| json!({
                            "transport": format!("{:?}", config.center.transport).to_lowercase(),
                            "ready": h.is_ready(),
                            "consumers": h.has_consumers(),
                            "center_members": h.center_members(),
                            "task_store": h.task_store(),
                            "waiting": h.in_flight(),
                            "results_delivered": h.router().stats.delivered.load(std::sync::atomic::Ordering::Relaxed),
                            "results_orphaned": h.router().stats.orphaned.load(std::sync::atomic::Ordering::Relaxed),
                            "results_duplicates": h.router().stats.duplicates.load(std::sync::atomic::Ordering::Relaxed),
                        })),
                    }),
                )
            }
            ("POST", "/admin/route/explain") => {
                let mut body = Vec::new();
                loop {
                    match session.read_request_body().await {
                        Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_EXPLAIN_BODY => {
                            body.extend_from_slice(&chunk)
                        }
                        Ok(Some(_)) => return json_reply(413, &json!({"error": "body too large"})),
                        Ok(None) => break,
                        Err(e) => return json_reply(400, &json!({"error": e.to_string()})),
                    }
                }
                let config = self.gateway.config();
                let Ok(line) = std::str::from_utf8(&body) else {
                    return json_reply(400, &json!({"error": "body is not UTF-8"}));
                };
                match crate::explain::parse(&config, line) {
                    Ok(request) => {
                        let decided =
                            self.gateway
                                .router
                                .decide(&config, &request, &NoFacts, self.gateway.pool_states());
                        json_reply(200, &serde_json::to_value(decided.decision).unwrap_or_default())
                    }
                    Err(message) => json_reply(400, &json!({ "error": message })),
                }
            }
            _ => json_reply(404, &json!({"error": format!("no admin route for {method} {path}")})),
        }
    }
}
