//! A model server broken below HTTP, on a raw socket: what a crashed, hung or impatient server does to
//! a connection, which the scripted server (HTTP through axum) cannot do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a broken model server does with a chat request once it has read it whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Resets the connection (a crash) before writing anything.
    Reset,
    /// Writes nothing and keeps the connection open until the peer closes it.
    Silent,
    /// Answers (keep-alive), then closes the connection once it has been idle for 300 ms: shorter than
    /// a client keeps a pooled connection, as many servers' keep-alive timeouts are.
    AnswerThenCloseIdle,
}

/// A broken model server: health checks (`GET`) are answered 200; each chat request is read whole,
/// counted, and then met with its [`Broken`] behaviour. It serves until the runtime ends.
#[derive(Debug, Clone)]
pub struct BrokenServer {
    addr: SocketAddr,
    chats: Arc<AtomicU64>,
    closed: Arc<AtomicU64>,
}

impl BrokenServer {
    /// Serves on `listener`; `model` is the model named in the answers of
    /// [`Broken::AnswerThenCloseIdle`].
    pub fn serve(listener: TcpListener, broken: Broken, model: &str) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let (chats, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let server = Self { addr, chats, closed };
        let (this, model) = (server.clone(), model.to_owned());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(this.clone().connection(socket, broken, model.clone()));
            }
        });
        Ok(server)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Chat requests read so far.
    pub fn chats(&self) -> u64 {
        self.chats.load(Ordering::SeqCst)
    }

    /// Connections that the peer closed (silent) or that it closed after being idle.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::SeqCst)
    }

    async fn connection(self, mut socket: TcpStream, broken: Broken, model: String) {
        let mut buf = Vec::new();
        while let Some(head) = read_request(&mut socket, &mut buf).await {
            if head.starts_with("get ") {
                let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                if socket.write_all(ok.as_bytes()).await.is_err() {
                    return;
                }
                continue;
            }
            self.chats.fetch_add(1, Ordering::SeqCst);
            match broken {
                Broken::Reset => {
                    // SO_LINGER 0: the close is a RST, as when the process dies (a zero linger never
                    // blocks the thread, which is what the deprecation warns of).
                    #[allow(deprecated)]
                    let _ = socket.set_linger(Some(Duration::ZERO));
                    return;
                }
                Broken::Silent => {
                    let mut rest = [0u8; 64];
                    while let Ok(n) = socket.read(&mut rest).await {
                        if n == 0 {
                            break;
                        }
                    }
                    self.closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Broken::AnswerThenCloseIdle => {
                    let body = format!(
                        "{{\"id\":\"chatcmpl-raw\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"{model}\",\
                         \"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"ok\"}},\"finish_reason\":\"stop\"}}],\
                         \"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}}}"
                    );
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                    // Idle for 300 ms with no next request: closed, as a server's keep-alive timeout does.
                    let mut chunk = [0u8; 4096];
                    match tokio::time::timeout(Duration::from_millis(300), socket.read(&mut chunk)).await {
                        Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                        _ => {
                            self.closed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// Reads one request (its head, then `content-length` bytes of body) from `socket`, consuming it from
/// `buf`; its head lower-cased, or `None` when the peer closed or sent something unreadable.
async fn read_request(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        read_more(socket, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = match head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        Some(v) => v.trim().parse().ok()?,
        None => 0,
    };
    while buf.len() < head_end + length {
        read_more(socket, buf).await?;
    }
    buf.drain(..head_end + length);
    Some(head)
}

async fn read_more(socket: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match socket.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}
