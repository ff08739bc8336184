//! The one small HTTP listener (`--metrics-addr`): `/metrics` for
//! Prometheus, `/healthz` (the process answers) and `/readyz` (every cache
//! holds its first full list; a standby is ready too, since it can take over
//! at once).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::controller::index::Index;
use crate::metrics::Metrics;

/// What the endpoints read.
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub index: Arc<Index>,
    /// Set once every cache is synced.
    pub ready: AtomicBool,
}

impl Endpoints {
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
        let (status, content_type, body) = match path {
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.metrics.encode(&self.index),
            ),
            "/healthz" => (StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" if self.ready.load(Ordering::Acquire) => {
                (StatusCode::OK, "text/plain", "ok\n".into())
            }
            "/readyz" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                "caches not synced yet\n".into(),
            ),
            _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        };
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    }
}

/// Binds `addr` (fails at once if it cannot), then serves in the background
/// for as long as the process runs.
pub async fn serve(addr: SocketAddr, endpoints: Arc<Endpoints>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: {e}"))?;
    info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let endpoints = endpoints.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = endpoints.respond(request.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(error) = connection.await {
                    debug!(%error, "a metrics connection ended with an error");
                }
            });
        }
    });
    Ok(())
}
