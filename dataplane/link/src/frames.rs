//! Frame I/O over any byte stream (a TLS stream in production): read one frame with
//! its size checked before allocation, write encoded frames. The codec itself is the
//! pure `xtsync-wire` crate.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite};
use xtsync_wire::{decode_header, Message, WireError, FRAME_HEADER_BYTES};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Includes a TLS refusal after the handshake (TLS 1.3 checks the client
    /// certificate after the client's last handshake flight).
    #[error("connection: {}", xtsync_transport::describe_tls_error(.0))]
    Io(#[from] std::io::Error),
    #[error("malformed frame from peer: {0}")]
    Wire(#[from] WireError),
    #[error("peer closed the connection")]
    Closed,
}

/// Reads the next frame. `Ok(None)` on a clean close between frames.
pub async fn read_message<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    let mut got = 0;
    while got < header.len() {
        let n = r.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 { Ok(None) } else { Err(FrameError::Closed) };
        }
        got += n;
    }
    let h = decode_header(&header)?;
    let mut payload = vec![0u8; h.payload_bytes as usize];
    r.read_exact(&mut payload).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => FrameError::Closed,
        _ => FrameError::Io(e),
    })?;
    Ok(Some(Message::decode(h.kind, payload)?))
}

/// Counts the bytes that cross a socket (after TLS), for `bytes_on_wire`.
pub struct Counted<S> {
    inner: S,
    pub bytes: Rc<Cell<u64>>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, bytes: Rc<Cell<u64>>) -> Self {
        Counted { inner, bytes }
    }
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.bytes.set(self.bytes.get() + n as u64);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.bytes.set(self.bytes.get() + n as u64);
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.bytes.set(self.bytes.get() + n as u64);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
