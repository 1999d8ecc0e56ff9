//! The HTTP endpoint: `GET /metrics` (OpenMetrics text), `GET /health` and
//! `GET /registrations` (the registrar's bindings, JSON).
//!
//! It runs on its own thread with a single-threaded tokio runtime, away
//! from the shards. Binding happens on the caller's thread, so a bad or
//! busy address is an error before anything else starts.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::metrics::{CONTENT_TYPE, Metrics};

/// How long requests in flight may take to finish once a stop is asked.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// A bound, not yet serving, metrics socket.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Binds the metrics address; the error names it.
pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("metrics address {addr}: {e}"));
    let listener = TcpListener::bind(addr).map_err(named)?;
    listener.set_nonblocking(true).map_err(named)?;
    let addr = listener.local_addr().map_err(named)?;
    Ok(MetricsListener { listener, addr })
}

impl MetricsListener {
    /// The bound address (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts serving on a thread of its own.
    pub fn serve(self, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(self.listener)?
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let app = router(metrics);
        let addr = self.addr;
        let thread = std::thread::Builder::new()
            .name("sbc-metrics".into())
            .spawn(move || {
                runtime.block_on(serve(listener, app, stop_rx));
                tracing::debug!(%addr, "metrics server stopped");
            })?;
        tracing::info!(%addr, "serving /metrics");
        Ok(MetricsServer {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// Binds `addr` and serves `/metrics` and `/health` on their own thread.
pub fn spawn_metrics_server(addr: SocketAddr, metrics: Arc<Metrics>) -> io::Result<MetricsServer> {
    bind(addr)?.serve(metrics)
}

/// A running metrics endpoint. Dropping it stops it too.
#[derive(Debug)]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets requests in flight finish (at most a couple
    /// of seconds) and waits for the thread to end.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            // An error means the server thread is gone already.
            let _ = stop.send(true);
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!(addr = %self.addr, "metrics server thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/health", get(health))
        .route("/registrations", get(registrations))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.render() {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics encoding failed\n",
        )
            .into_response(),
    }
}

/// The registrar's bindings as JSON, one object per account, sorted by
/// account: what an operator needs to see who is reachable where. No
/// secrets are kept in a binding.
async fn registrations(State(metrics): State<Arc<Metrics>>) -> Response {
    let now = std::time::Instant::now();
    // Copied out under the registrar's lock (cheap: shared strings and
    // bytes), rendered after it is released.
    let bindings: Vec<sbc_core::registrar::Binding> = metrics.with_bindings(|location| {
        location
            .iter()
            .filter(|b| b.expires > now)
            .cloned()
            .collect()
    });
    let mut list: Vec<serde_json::Value> = bindings
        .iter()
        .map(|b| {
            serde_json::json!({
                "account": &*b.account,
                "extension": &*b.extension,
                "contact": String::from_utf8_lossy(b.contact()),
                "transport": b.flow.transport.token(),
                "source": b.flow.remote.to_string(),
                "expires_in_s": b.expires.saturating_duration_since(now).as_secs(),
                "reachable": b.reachable,
            })
        })
        .collect();
    list.sort_by(|a, b| a["account"].as_str().cmp(&b["account"].as_str()));
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::Value::Array(list).to_string(),
    )
        .into_response()
}

/// 200 "ok" while every shard runs; 503 naming the shards that stopped.
async fn health(State(metrics): State<Arc<Metrics>>) -> Response {
    let stopped = metrics.stopped_shards();
    if stopped.is_empty() {
        "ok".into_response()
    } else {
        let list: Vec<String> = stopped.iter().map(usize::to_string).collect();
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("shard stopped: {}\n", list.join(", ")),
        )
            .into_response()
    }
}

/// Resolves once a stop is asked (or the [`MetricsServer`] is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    // `wait_for` fails only when the sender is dropped: stop then too.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn serve(listener: tokio::net::TcpListener, app: Router, stop: watch::Receiver<bool>) {
    let server = axum::serve(listener, app).with_graceful_shutdown(stopped(stop.clone()));
    let deadline = async {
        stopped(stop).await;
        tokio::time::sleep(STOP_GRACE).await;
    };
    tokio::select! {
        result = server.into_future() => {
            if let Err(e) = result {
                tracing::error!(error = %e, "metrics server failed");
            }
        }
        () = deadline => tracing::warn!("metrics server: requests still open after the grace period, closing them"),
    }
}

#[cfg(test)]
mod tests;
