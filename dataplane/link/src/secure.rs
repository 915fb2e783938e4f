//! A data-plane session's byte stream after the TLS handshake: encrypted by rustls in
//! user space, or by the kernel once the session keys were handed to it (kTLS). The
//! choice is made per session, right after the handshake and before the first
//! application byte (the target speaks first: `Ready`).

use crate::fd::borrowed_fd;
use std::os::fd::BorrowedFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use xtsync_config::KtlsMode;
use xtsync_transport::ktls::{self, ControlRecord, KernelCiphers, KtlsError, TlsPath};

use crate::frames::Counted;
use xtsync_metrics::WorkerMetrics;

/// The kernel-TLS side of the worker: the configured mode and what the start-up probe
/// found.
#[derive(Debug, Clone, Copy)]
pub struct KtlsPolicy {
    pub mode: KtlsMode,
    /// The ciphers the kernel takes keys for (none: no kernel TLS, or `off`).
    pub ciphers: KernelCiphers,
}

/// Set when a hand-off failed after the keys left rustls in `auto` mode: the kernel
/// accepted the probe but not a real session, so later sessions keep rustls instead of
/// failing the same way.
static KERNEL_TLS_DISABLED: AtomicBool = AtomicBool::new(false);

impl KtlsPolicy {
    /// Probes the kernel once. `on` without kernel TLS is an error (the worker does not
    /// start); `auto` logs the choice once.
    pub fn from_mode(mode: KtlsMode) -> Result<Self, KtlsError> {
        if mode == KtlsMode::Off {
            tracing::info!("kernel TLS off (transfer.ktls: off): sessions use rustls in user space");
            return Ok(KtlsPolicy { mode, ciphers: KernelCiphers::default() });
        }
        match ktls::probe() {
            Ok(ciphers) => {
                tracing::info!(?ciphers, "kernel TLS available: TLS 1.3 sessions hand their keys to the kernel");
                Ok(KtlsPolicy { mode, ciphers })
            }
            Err(e) if mode == KtlsMode::Auto => {
                tracing::info!(reason = %e, "kernel TLS unavailable: sessions use rustls in user space");
                Ok(KtlsPolicy { mode, ciphers: KernelCiphers::default() })
            }
            Err(e) => Err(e),
        }
    }
}

/// `fut`'s output, or `None` if it did not finish within `limit`.
pub async fn within<T>(limit: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

type Tls = futures_rustls::TlsStream<Counted<TcpStream>>;

pub enum SecureStream {
    Rustls(Box<Tls>),
    Kernel(KernelTlsStream),
}

/// A socket whose TLS records the kernel encrypts and decrypts.
pub struct KernelTlsStream {
    inner: Counted<TcpStream>,
    /// Plaintext rustls had decrypted before the hand-off; read first.
    early: Vec<u8>,
    early_at: usize,
    peer_closed: bool,
    close_notify_sent: bool,
}

impl KernelTlsStream {
    fn fd(&self) -> BorrowedFd<'_> {
        socket_fd(self.inner.get_ref())
    }
}

/// glommio's stream exposes only its raw descriptor.
fn socket_fd(tcp: &TcpStream) -> BorrowedFd<'_> {
    borrowed_fd(tcp)
}

/// Chooses the session's path after its handshake. Falls back to rustls (and counts
/// it) when the policy, the suite or the socket refuses kTLS before the keys left
/// rustls; once they have, a failure ends the session with the reason.
pub fn establish(tls: Tls, policy: KtlsPolicy, metrics: &WorkerMetrics) -> Result<(SecureStream, TlsPath), KtlsError> {
    let path = choose(tls, policy, metrics);
    let counter = match path {
        Ok((_, TlsPath::Kernel)) => &metrics.tls_sessions_kernel_total,
        Ok((_, TlsPath::Userspace)) => &metrics.tls_sessions_userspace_total,
        Err(_) => &metrics.ktls_handoffs_failed_total,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    path
}

fn choose(tls: Tls, policy: KtlsPolicy, metrics: &WorkerMetrics) -> Result<(SecureStream, TlsPath), KtlsError> {
    let userspace = |tls: Tls| Ok((SecureStream::Rustls(Box::new(tls)), TlsPath::Userspace));
    if !policy.ciphers.any() || KERNEL_TLS_DISABLED.load(Ordering::Relaxed) {
        return userspace(tls);
    }
    let (io, conn) = tls.get_ref();
    // Everything that can refuse before the keys leave rustls is checked here, so that
    // a refusal still leaves a working rustls session.
    let refusal = match (conn.protocol_version(), conn.negotiated_cipher_suite().and_then(ktls::kernel_cipher)) {
        (Some(rustls::ProtocolVersion::TLSv1_3), Some(cipher)) if policy.ciphers.has(cipher) => {
            ktls::attach_ulp(socket_fd(io.get_ref())).err().map(|e| e.to_string())
        }
        (Some(rustls::ProtocolVersion::TLSv1_3), Some(cipher)) => Some(format!("this kernel takes no {cipher:?} keys")),
        (Some(rustls::ProtocolVersion::TLSv1_3), None) => Some("the suite has no kernel TLS equivalent".into()),
        (version, _) => Some(format!("{version:?}: only TLS 1.3 sessions are handed to the kernel")),
    };
    if let Some(reason) = refusal {
        if policy.mode == KtlsMode::On {
            return Err(KtlsError::Refused(reason));
        }
        metrics.ktls_fallbacks_total.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%reason, "kernel TLS refused for this session: rustls in user space");
        return userspace(tls);
    }
    let (io, conn): (Counted<TcpStream>, rustls::Connection) = match tls {
        futures_rustls::TlsStream::Client(c) => {
            let (io, conn) = c.into_inner();
            (io, conn.into())
        }
        futures_rustls::TlsStream::Server(s) => {
            let (io, conn) = s.into_inner();
            (io, conn.into())
        }
    };
    let handed = match ktls::hand_off(socket_fd(io.get_ref()), conn) {
        Ok(h) => h,
        Err(e) => {
            if policy.mode == KtlsMode::Auto && !KERNEL_TLS_DISABLED.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "kernel TLS hand-off failed: later sessions of this process keep rustls");
            }
            return Err(e);
        }
    };
    tracing::debug!(suite = %handed.suite, "session keys handed to the kernel");
    let stream = KernelTlsStream {
        inner: io,
        early: handed.early_plaintext,
        early_at: 0,
        peer_closed: false,
        close_notify_sent: false,
    };
    Ok((SecureStream::Kernel(stream), TlsPath::Kernel))
}

impl SecureStream {
    /// A duplicate of the socket when the kernel makes the TLS records: plain writes to
    /// it (and `sendfile`) are encrypted. `None` under rustls.
    pub fn kernel_socket(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        match self {
            SecureStream::Rustls(_) => None,
            SecureStream::Kernel(k) => Some(k.fd().try_clone_to_owned()),
        }
    }
}

impl AsyncRead for SecureStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SecureStream::Rustls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            SecureStream::Kernel(k) => k.poll_read_plain(cx, buf),
        }
    }
}

impl AsyncWrite for SecureStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SecureStream::Rustls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            SecureStream::Kernel(k) => Pin::new(&mut k.inner).poll_write(cx, buf),
        }
    }
    /// Vectored: rustls makes its records from all the slices at once (a frame's head
    /// and body need not be copied together first).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            SecureStream::Rustls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            SecureStream::Kernel(k) => Pin::new(&mut k.inner).poll_write_vectored(cx, bufs),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SecureStream::Rustls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            SecureStream::Kernel(k) => Pin::new(&mut k.inner).poll_flush(cx),
        }
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            SecureStream::Rustls(s) => Pin::new(s.as_mut()).poll_close(cx),
            SecureStream::Kernel(k) => {
                if !k.close_notify_sent {
                    k.close_notify_sent = true;
                    // A warning-level close_notify, as rustls sends it; best effort (the
                    // FIN that follows also ends the stream for the peer's kernel).
                    if let Err(e) = ktls::send_alert(k.fd(), 1, 0) {
                        tracing::debug!(error = %e, "close_notify not sent");
                    }
                }
                Pin::new(&mut k.inner).poll_close(cx)
            }
        }
    }
}

impl KernelTlsStream {
    fn poll_read_plain(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        if self.early_at < self.early.len() {
            let n = buf.len().min(self.early.len() - self.early_at);
            buf[..n].copy_from_slice(&self.early[self.early_at..self.early_at + n]);
            self.early_at += n;
            return Poll::Ready(Ok(n));
        }
        if self.peer_closed {
            return Poll::Ready(Ok(0));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            // A record that is not application data: read it with its type.
            Poll::Ready(Err(e)) if e.raw_os_error() == Some(libc::EIO) => match ktls::read_control_record(self.fd()) {
                Ok(ControlRecord::CloseNotify) => {
                    self.peer_closed = true;
                    Poll::Ready(Ok(0))
                }
                Ok(ControlRecord::Alert(level, description)) => Poll::Ready(Err(std::io::Error::other(format!(
                    "peer sent TLS alert {description} (level {level})"
                )))),
                Ok(ControlRecord::Other(record_type)) => Poll::Ready(Err(std::io::Error::other(format!(
                    "peer sent a TLS record of type {record_type}, which a kernel TLS session cannot take"
                )))),
                Err(_) => Poll::Ready(Err(e)),
            },
            other => other,
        }
    }
}
