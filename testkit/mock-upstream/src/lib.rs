//! `r1-mock-upstream`: the one stand-in for the external big-model API (DeepSeek R1 behind an
//! OpenAI-compatible server), for tests and benchmarks. Our own components are never mocked.
//!
//! It serves, on a listener the caller binds (port 0 in tests):
//!
//! - `POST /v1/chat/completions` — a scripted completion: JSON, or with `stream: true` SSE events
//!   (a role-only chunk, `reasoning_content` chunks, content chunks, a finishing chunk, with
//!   `stream_options.include_usage` a usage chunk with `choices: []`, then `data: [DONE]`). Bodies are
//!   [`r1_proto`]'s types, so they have exactly the shape the rest of r1-hybrid reads.
//!   A request's `tools` get a tool call instead of text, `logprobs: true` logprobs with every content
//!   token, `n > 1` that many choices, and `response_format` `json_object`/`json_schema` a JSON document
//!   (a minimal instance of the schema), as vLLM and DeepSeek's API answer them.
//! - `GET /v1/models`; `GET /healthz`, `/readyz`, `/health` (whatever a health check probes);
//!   `GET /stats` — the [`Stats`] counters as JSON.
//!
//! The [`Script`] sets the number of chunks and their text, the delay before the first token and
//! between tokens, reasoning chunks, and failures: the first N requests answered 500 or 429, the
//! connection dropped after K tokens, a concurrency limit, or any of these per request by arrival
//! index ([`Script::per_request`]). A [`BrokenServer`] is broken below HTTP instead: it resets the
//! connection, goes silent, or closes an idle keep-alive connection.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::time::Duration;
//! use r1_mock_upstream::Script;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let script = Script::default()
//!     .reasoning(2, "think ")
//!     .content(4, "word ")
//!     .delays(Duration::from_millis(50), Duration::from_millis(10));
//! let upstream = r1_mock_upstream::serve(listener, script).await?;
//! // … point the code under test at upstream.url() …
//! assert_eq!(upstream.stats().snapshot().failed, 0);
//! upstream.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod broken;
mod script;
mod server;
mod structured;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use broken::{Broken, BrokenServer};
pub use script::{FailFirst, PerRequest, Reply, Script};
pub use server::{EMBEDDING_DIMENSIONS, Recorded, Stats, StatsSnapshot, embedding};

use server::Shared;

/// Serves `script` on `listener` until `shutdown` resolves, then stops accepting and lets the
/// answers in progress finish (a streamed one runs to its scripted end).
pub async fn run(
    listener: TcpListener,
    script: Script,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_shared(listener, Arc::new(Shared::new(script)), shutdown).await
}

async fn run_shared(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Small SSE events must leave at once, as a real server's do.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, server::router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Starts serving `script` on `listener` in a task of the current runtime.
pub async fn serve(listener: TcpListener, script: Script) -> std::io::Result<Handle> {
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(script));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run_shared(listener, shared.clone(), async move {
        let _ = stopped.await;
    }));
    Ok(Handle {
        addr,
        shared,
        stop: Some(stop),
        task: Some(task),
    })
}

/// A running mock. Dropping it starts a graceful shutdown without waiting for it; call
/// [`Handle::shutdown`] to wait.
#[derive(Debug)]
pub struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Handle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://{addr}`, the base URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The live counters of chat requests.
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// The chat requests kept so far (up to [`Script::record`]), in arrival order.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Stops accepting connections and waits for the answers in progress to finish.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
