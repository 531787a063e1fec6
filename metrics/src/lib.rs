//! writ's operator endpoint: Prometheus metrics (`GET /metrics`, OpenMetrics text) and
//! readiness (`GET /healthz`, `GET /readyz`: 200 when ready, 503 with the reason when not)
//! over plain HTTP/1.1, for `--metrics-listen`. The server and the agent each own their
//! metric families (`writ-server`'s and `writ-agent`'s `metrics` modules); this crate only
//! serves them.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use prometheus_client;

/// OpenMetrics text, which Prometheus negotiates and parses.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A slow or idle client cannot hold a connection's task forever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process can do its job now: `Err` carries the reason it cannot.
pub type Readiness = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Run just before each scrape, to set gauges that are cheaper to read than to track
/// (certificate expiries).
pub type BeforeScrape = Box<dyn Fn() + Send + Sync>;

/// What the endpoint serves.
pub struct Exposition {
    registry: Registry,
    before_scrape: Option<BeforeScrape>,
    ready: Readiness,
}

impl Exposition {
    /// Serves `registry`, reporting readiness from `ready`.
    pub fn new(registry: Registry, ready: Readiness) -> Self {
        Self {
            registry,
            before_scrape: None,
            ready,
        }
    }

    /// Runs `f` before encoding each scrape.
    pub fn before_scrape(mut self, f: BeforeScrape) -> Self {
        self.before_scrape = Some(f);
        self
    }

    /// The metrics as OpenMetrics text.
    pub fn encode(&self) -> String {
        if let Some(f) = &self.before_scrape {
            f();
        }
        let mut out = String::new();
        // Writing into a String cannot fail; an encoding error would be a bug in a
        // metric's labels, and a partial page is still better than none.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }

    /// The readiness verdict.
    pub fn ready(&self) -> Result<(), String> {
        (self.ready)()
    }
}

/// Binds the endpoint's listener, naming the address in the error.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("binding the metrics endpoint {addr}: {e}"),
        )
    })
}

/// Serves `exposition` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    exposition: Arc<Exposition>,
    shutdown: CancellationToken,
) {
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Out of file descriptors and similar: back off briefly, keep serving.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let exposition = exposition.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let exposition = exposition.clone();
                async move { Ok::<_, Infallible>(respond(&exposition, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), service);
            tokio::select! {
                _ = stop.cancelled() => {}
                r = conn => if let Err(e) = r {
                    tracing::debug!(error = %e, "metrics connection ended with an error");
                },
            }
        });
    }
}

fn respond(exposition: &Exposition, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, exposition.encode());
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(OPENMETRICS));
            r
        }
        "/healthz" | "/readyz" => match exposition.ready() {
            Ok(()) => text(StatusCode::OK, "ok\n".into()),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_metrics_readiness_and_refuses_the_rest() {
        let mut registry = Registry::default();
        let c = Counter::<u64>::default();
        registry.register("demo_things", "Things.", c.clone());
        c.inc();
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ready.clone();
        let exposition = Exposition::new(
            registry,
            Box::new(move || {
                if r.load(std::sync::atomic::Ordering::Relaxed) {
                    Ok(())
                } else {
                    Err("warming up".into())
                }
            }),
        );
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, Arc::new(exposition), stop.clone()));

        let m = get(addr, "/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"), "{m}");
        assert!(m.contains("demo_things_total 1"), "{m}");
        let h = get(addr, "/healthz").await;
        assert!(
            h.starts_with("HTTP/1.1 503") && h.contains("not ready: warming up"),
            "{h}"
        );
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
    }
}
