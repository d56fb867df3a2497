//! The HTTP endpoint on `[server] metrics_listen`: `GET /metrics` (Prometheus text) and
//! `GET /health` (200 while serving, 503 once shutdown has begun, for load balancers
//! and Kubernetes readiness).
//!
//! Two fixed GET routes with one response per connection do not justify an HTTP
//! framework in the build: this reads one request head (bounded in size and time),
//! answers, and closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::prometheus::CONTENT_TYPE;

/// Largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// A scraper that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint serves.
pub trait Scrape: Send + Sync + 'static {
    /// The Prometheus text of everything counted now.
    fn metrics_text(&self) -> String;
    /// False once shutdown has begun.
    fn serving(&self) -> bool;
}

/// A response: status line, content type, body.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// e.g. `200 OK`
    pub status: &'static str,
    /// Content-Type header value
    pub content_type: &'static str,
    /// the body
    pub body: String,
}

/// Answer one request head (pure, for tests).
pub fn respond(head: &[u8], source: &dyn Scrape) -> Response {
    let text = String::from_utf8_lossy(head);
    let mut words = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let plain = "text/plain; charset=utf-8";
    if method != "GET" && method != "HEAD" {
        return Response {
            status: "405 Method Not Allowed",
            content_type: plain,
            body: "only GET\n".into(),
        };
    }
    match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: CONTENT_TYPE,
            body: source.metrics_text(),
        },
        "/health" | "/healthz" | "/ready" => {
            if source.serving() {
                Response {
                    status: "200 OK",
                    content_type: plain,
                    body: "ok\n".into(),
                }
            } else {
                Response {
                    status: "503 Service Unavailable",
                    content_type: plain,
                    body: "draining\n".into(),
                }
            }
        }
        _ => Response {
            status: "404 Not Found",
            content_type: plain,
            body: "pgshard serves /metrics and /health\n".into(),
        },
    }
}

/// Serve requests until `stop` is cancelled.
pub async fn serve(listener: TcpListener, source: Arc<dyn Scrape>, stop: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let source = source.clone();
        tracker.spawn(async move {
            if let Err(e) = answer(stream, &*source).await {
                tracing::debug!(error = %e, "metrics endpoint: request failed");
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(READ_TIMEOUT, tracker.wait()).await;
}

async fn answer(mut stream: TcpStream, source: &dyn Scrape) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
            if head.len() > MAX_HEAD {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request head"))??;
    let response = respond(&head, source);
    let is_head = head.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    )
    .into_bytes();
    if !is_head {
        out.extend_from_slice(response.body.as_bytes());
    }
    stream.write_all(&out).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct Fixed(AtomicBool);

    impl Scrape for Fixed {
        fn metrics_text(&self) -> String {
            "pgshard_up 1\n".into()
        }
        fn serving(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[test]
    fn routes() {
        let s = Fixed(AtomicBool::new(true));
        let r = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &s);
        assert_eq!((r.status, r.body.as_str()), ("200 OK", "pgshard_up 1\n"));
        assert_eq!(
            respond(b"GET /health HTTP/1.0\r\n\r\n", &s).status,
            "200 OK"
        );
        s.0.store(false, Ordering::Relaxed);
        assert_eq!(
            respond(b"GET /health?x=1 HTTP/1.1\r\n\r\n", &s).status,
            "503 Service Unavailable"
        );
        assert_eq!(
            respond(b"GET / HTTP/1.1\r\n\r\n", &s).status,
            "404 Not Found"
        );
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n", &s).status,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"", &s).status, "405 Method Not Allowed");
    }
}
