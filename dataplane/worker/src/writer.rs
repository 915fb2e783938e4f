//! The single writer of a session's stream. Producers encode frames into buffers and
//! queue them with a byte budget (so a session's queued output is bounded); the writer
//! coalesces queued frames into large writes.

use std::rc::Rc;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::sync::{Semaphore, StaticPermit};
use xtsync_wire::Message;

/// Bytes of encoded frames a session may have queued for its socket.
pub const QUEUED_BYTES_MAX: u64 = 32 << 20;

struct Queued {
    frame: Vec<u8>,
    _permit: StaticPermit,
}

/// Cloneable handle to queue frames. Lives on one executor.
#[derive(Clone)]
pub struct FrameSender {
    tx: flume::Sender<Queued>,
    budget: Rc<Semaphore>,
}

impl FrameSender {
    /// Queues a message; waits while the session's queue is over its byte budget.
    /// Fails only when the writer has stopped (connection gone).
    pub async fn send(&self, msg: &Message) -> Result<(), std::io::Error> {
        let mut frame = Vec::new();
        msg.encode(&mut frame);
        self.send_encoded(frame).await
    }

    pub async fn send_encoded(&self, frame: Vec<u8>) -> Result<(), std::io::Error> {
        let units = (frame.len() as u64).min(QUEUED_BYTES_MAX);
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session writer stopped");
        let permit = self.budget.acquire_static_permit(units).await.map_err(|_| closed())?;
        self.tx.send_async(Queued { frame, _permit: permit }).await.map_err(|_| closed())
    }
}

/// Starts the writer task for `w`; it ends when every sender is dropped (after
/// flushing and closing the stream's write side) or on the first write error.
pub fn spawn_writer<W: AsyncWrite + Unpin + 'static>(
    mut w: W,
) -> (FrameSender, glommio::task::JoinHandle<Result<W, std::io::Error>>) {
    let (tx, rx) = flume::bounded::<Queued>(1024);
    let budget = Rc::new(Semaphore::new(QUEUED_BYTES_MAX));
    let handle = glommio::spawn_local(async move {
        let mut batch = Vec::with_capacity(1 << 20);
        while let Ok(first) = rx.recv_async().await {
            batch.clear();
            batch.extend_from_slice(&first.frame);
            drop(first);
            // Coalesce what is already queued into one write (up to 1 MiB).
            while batch.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(q) => batch.extend_from_slice(&q.frame),
                    Err(_) => break,
                }
            }
            w.write_all(&batch).await?;
            if rx.is_empty() {
                w.flush().await?;
            }
        }
        // Close our direction (TLS close_notify, then FIN) so that the peer sees the
        // end of the session even while our reader still waits for its frames.
        w.close().await?;
        Ok(w)
    })
    .detach();
    (FrameSender { tx, budget }, handle)
}
