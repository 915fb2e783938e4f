//! Serving the REST API over mutual TLS: accept, handshake with the current
//! configuration of a [`ReloadingTls`] (client certificate required, CRL and role
//! checked by `xtsync_transport`), then HTTP/1.1 with the peer's identity attached to
//! every request as an [`access::Peer`](crate::http::access::Peer).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;
use xtsync_transport::{describe_tls_error, not_after_unix, peer_identity, ReloadingTls};

use crate::http::access::Peer;

/// A peer that does not finish its handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight requests (long polls: ≤ 10 s) may finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(12);

/// Serves `app` on `listener` until `shutdown` resolves, then lets open requests end.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: ReloadingTls,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => {
                    // The configuration of the moment: a reload applies to new connections.
                    let config = tls.current().server.clone();
                    connections.spawn(connection(tcp, addr, app.clone(), config, tls.clone(), stop_rx.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "closing connections that did not finish in time");
        connections.abort_all();
    }
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    app: Router,
    config: std::sync::Arc<rustls::ServerConfig>,
    tls_now: ReloadingTls,
    mut stop: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(tcp);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let reason = describe_tls_error(&e);
            tracing::warn!(peer = %addr, %reason, "refused connection: TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(peer = %addr, "refused connection: no TLS handshake within 10 s");
            return;
        }
    };
    // The verifier accepted the chain, so the leaf parses; anything else is refused.
    let identity = match peer_identity(tls.get_ref().1.peer_certificates()) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(peer = %addr, reason = %e, "refused connection: no usable client certificate");
            return;
        }
    };
    tracing::debug!(peer = %addr, cert = %identity, "connection accepted");
    let not_after = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(|c| not_after_unix(c).ok());
    let peer = Peer { addr, identity };
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let (app, peer, tls_now) = (app.clone(), peer.clone(), tls_now.clone());
        async move {
            // The handshake checked the certificate once; a kept-alive connection is
            // checked again on every request against the current CRL and the clock, so
            // that revoking (or expiry) cuts off a peer at its next request.
            if let Some(reason) = no_longer_valid(&tls_now, &peer, not_after) {
                tracing::warn!(peer = %peer.addr, cert = %peer.identity, %reason, "refused request on a kept-alive connection");
                let refusal = (StatusCode::FORBIDDEN, [(header::CONNECTION, "close")], "certificate no longer valid\n");
                return Ok(refusal.into_response());
            }
            req.extensions_mut().insert(peer);
            app.oneshot(req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
    }
}

/// Why a peer accepted at its handshake may no longer be served, if it may not.
fn no_longer_valid(tls: &ReloadingTls, peer: &Peer, not_after_unix: Option<i64>) -> Option<&'static str> {
    if tls.current().revoked_serials.contains(&peer.identity.serial) {
        return Some("certificate revoked since the handshake");
    }
    let now = (xtsync_api::now_unix_ms() / 1000) as i64;
    match not_after_unix {
        Some(t) if now > t => Some("certificate expired since the handshake"),
        _ => None,
    }
}
