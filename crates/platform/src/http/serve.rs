//! The server loop: accepts TCP connections and serves a router on them over HTTP/1.1,
//! with the bounds `axum::serve` does not have.
//!
//! * **Header-read timeout.** A connection must finish sending a request's headers within
//!   [`ServeConfig::header_read_timeout`] of starting it (or of the previous response, on
//!   a kept-alive connection), or it is closed. A client that trickles headers, or never
//!   sends any (slowloris), holds a connection for that long and no longer.
//! * **A bound on open connections** ([`ServeConfig::max_connections`]). At the bound the
//!   loop stops accepting; new connections wait in the kernel's backlog until one closes,
//!   so the process's memory and file descriptors stay bounded whatever clients do.
//! * **Graceful shutdown.** When `shutdown` completes: stop accepting, let every
//!   connection finish the request it is serving and close, and wait for them (at most
//!   [`ServeConfig::shutdown_grace`]).
//! * **Connect info.** Every request carries `ConnectInfo<SocketAddr>` (the TCP peer),
//!   from which the edge resolves the client ([`ClientInfo`](super::ClientInfo)).

use std::{future::Future, sync::Arc, time::Duration};

use axum::{body::Body, extract::ConnectInfo, Router};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

/// How connections are accepted and kept.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Time a client has to send a request's headers, from the start of the connection or
    /// the end of the previous response; also how long an idle kept-alive connection stays.
    pub header_read_timeout: Duration,
    /// Open connections at most; beyond, new ones wait in the listen backlog.
    pub max_connections: usize,
    /// How long shutdown waits for in-flight requests before dropping their connections.
    pub shutdown_grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then drains (see the module
/// comment). Returns once every connection is closed or the grace period is over.
pub async fn serve<F>(
    listener: TcpListener,
    router: Router,
    config: &ServeConfig,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        // Zero would close every connection before its first request.
        .header_read_timeout(config.header_read_timeout.max(Duration::from_millis(100)))
        .keep_alive(true);
    let addr = listener.local_addr()?;
    tokio::pin!(shutdown);

    loop {
        // A free slot first, then a connection: at the bound nothing more is accepted.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept: not
                    // fatal; pause briefly so a persistent condition does not spin.
                    tracing::warn!(error = %err, %addr, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().oneshot(request.map(Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            metrics::gauge!("http_connections_open").increment(1.0);
            if let Err(err) = connection.await {
                // Header timeouts, resets and malformed requests end up here: the client's
                // problem, not ours.
                tracing::debug!(error = %err, %peer, "connection closed with an error");
            }
            metrics::gauge!("http_connections_open").decrement(1.0);
            drop(slot);
        });
    }

    drop(listener);
    tracing::info!(%addr, connections = graceful.count(), "stopped accepting; draining");
    if tokio::time::timeout(config.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(%addr, grace = ?config.shutdown_grace, "connections still open after the grace period; dropping them");
    }
    Ok(())
}
