//! The single writer of a session's stream. Producers encode frames into buffers and
//! queue them with a byte budget (so a session's queued output is bounded); the writer
//! coalesces small queued frames into large writes and writes large ones (chunk data)
//! from their own buffers.

use std::rc::Rc;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::sync::{Semaphore, StaticPermit};
use xtsync_wire::Message;

/// Bytes of encoded frames a session may have queued for its socket.
pub const QUEUED_BYTES_MAX: u64 = 32 << 20;
/// Small frames are coalesced into writes of up to this size.
const COALESCED_BYTES_MAX: usize = 1 << 20;
/// Frames at least this large (one TLS record) are written from their own buffer.
const DIRECT_WRITE_BYTES_MIN: usize = 16 << 10;

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
        let mut batch = Vec::with_capacity(COALESCED_BYTES_MAX);
        while let Ok(first) = rx.recv_async().await {
            // Small frames are coalesced into one write; a frame of a TLS record or more
            // (chunk data) is written from its own buffer, not copied again.
            let mut next = Some(first);
            while let Some(q) = next.take() {
                if q.frame.len() >= DIRECT_WRITE_BYTES_MIN {
                    if !batch.is_empty() {
                        w.write_all(&batch).await?;
                        batch.clear();
                    }
                    w.write_all(&q.frame).await?;
                } else {
                    batch.extend_from_slice(&q.frame);
                }
                drop(q);
                if batch.len() < COALESCED_BYTES_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                w.write_all(&batch).await?;
                batch.clear();
            }
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
