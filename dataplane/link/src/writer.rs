//! The single writer of a session's stream. Producers encode frames into buffers and
//! queue them with a byte budget (so a session's queued output is bounded); the writer
//! coalesces small queued frames into large writes and writes large ones (chunk data)
//! from their own buffers. On a kernel-TLS session, chunk bytes can also be sent by the
//! kernel from the source file (`sendfile`, see `crate::sendfile`), in queue order.
//! A frame whose body is a stretch of a buffer the producer keeps anyway (a raw chunk
//! of a segment) is queued as head, body and tail, and written with one vectored write:
//! the body is not copied into a frame first.

use std::cell::Cell;
use std::io::IoSlice;
use std::ops::Range;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures_lite::{AsyncWrite, AsyncWriteExt};
use glommio::sync::{Semaphore, StaticPermit};
use xtsync_wire::Message;

use crate::sendfile::{send_parts, Part, SEND_STALL_LIMIT};
use crate::shaping::RateLimiter;
use xtsync_metrics::WorkerMetrics;

/// Bytes of encoded frames a session may have queued for its socket.
pub const QUEUED_BYTES_MAX: u64 = 32 << 20;
/// Small frames are coalesced into writes of up to this size.
const COALESCED_BYTES_MAX: usize = 1 << 20;
/// Frames at least this large (one TLS record) are written from their own buffer.
const DIRECT_WRITE_BYTES_MIN: usize = 16 << 10;

enum Item {
    /// Ends the stream (close_notify, FIN) even while other senders are alive.
    Close,
    Frame(Vec<u8>),
    /// Frames whose chunk bodies the kernel sends from files.
    Parts(Vec<Part>),
    /// A frame whose body is written from a shared buffer.
    Spliced(SplicedFrame),
}

/// A frame written as `head`, then `body[range]` of a buffer shared with its owner
/// (kept alive until written), then `tail`.
pub struct SplicedFrame {
    pub head: Vec<u8>,
    pub body: Rc<dyn AsRef<[u8]>>,
    pub range: Range<usize>,
    pub tail: Vec<u8>,
}

impl SplicedFrame {
    fn bytes(&self) -> u64 {
        (self.head.len() + self.range.len() + self.tail.len()) as u64
    }
}

impl Item {
    fn bytes(&self) -> u64 {
        match self {
            Item::Close => 0,
            Item::Frame(f) => f.len() as u64,
            Item::Parts(parts) => parts_bytes(parts),
            Item::Spliced(frame) => frame.bytes(),
        }
    }
}

fn parts_bytes(parts: &[Part]) -> u64 {
    parts.iter().map(Part::bytes).sum()
}

struct Queued {
    item: Item,
    _permit: StaticPermit,
}

/// A kernel-TLS socket the writer may hand file ranges to: plain socket writes are
/// TLS records there.
pub struct KernelSocket {
    /// A duplicate of the session's socket: it stays valid while a blocking send runs.
    pub fd: Arc<OwnedFd>,
    /// The session's wire byte count (the stream's own writes are counted below it).
    pub wire_bytes: Rc<Cell<u64>>,
    pub metrics: Arc<WorkerMetrics>,
}

/// Cloneable handle to queue frames. Lives on one executor.
#[derive(Clone)]
pub struct FrameSender {
    tx: flume::Sender<Queued>,
    budget: Rc<Semaphore>,
    kernel_sends: bool,
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
        let units = frame.len() as u64;
        self.queue(Item::Frame(frame), units).await
    }

    /// Queues a frame whose body the writer takes from a shared buffer. The body's
    /// range must lie within the buffer.
    pub async fn send_spliced(&self, frame: SplicedFrame) -> Result<(), std::io::Error> {
        if frame.range.end > (*frame.body).as_ref().len() || frame.range.start > frame.range.end {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame body outside its buffer"));
        }
        let units = frame.bytes();
        self.queue(Item::Spliced(frame), units).await
    }

    /// True when file ranges can be queued (`send_parts`): the session's TLS records
    /// are made by the kernel.
    pub fn kernel_sends(&self) -> bool {
        self.kernel_sends
    }

    /// Queues frames some of whose bytes the kernel reads from files. Only on a
    /// session where `kernel_sends()` holds.
    pub async fn send_parts(&self, parts: Vec<Part>) -> Result<(), std::io::Error> {
        let units = parts_bytes(&parts);
        self.queue(Item::Parts(parts), units).await
    }

    /// Closes the session's write side after everything queued before; later sends
    /// fail. Senders held elsewhere (a reply task) do not keep the stream open.
    pub async fn close(&self) {
        let _ = self.queue(Item::Close, 0).await;
    }

    async fn queue(&self, item: Item, bytes: u64) -> Result<(), std::io::Error> {
        let closed = || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "session writer stopped");
        let units = bytes.min(QUEUED_BYTES_MAX);
        let permit = self.budget.acquire_static_permit(units).await.map_err(|_| closed())?;
        self.tx.send_async(Queued { item, _permit: permit }).await.map_err(|_| closed())
    }
}

/// Starts the writer task for `w`; it ends when every sender is dropped (after
/// flushing and closing the stream's write side) or on the first write error.
/// `kernel`: the session's socket when the kernel makes its TLS records.
pub fn spawn_writer<W: AsyncWrite + Unpin + 'static>(
    mut w: W,
    kernel: Option<KernelSocket>,
    limiter: Option<Arc<RateLimiter>>,
) -> (FrameSender, glommio::task::JoinHandle<Result<W, std::io::Error>>) {
    let (tx, rx) = flume::bounded::<Queued>(1024);
    let budget = Rc::new(Semaphore::new(QUEUED_BYTES_MAX));
    let kernel_sends = kernel.is_some();
    let task_budget = budget.clone();
    let handle = glommio::spawn_local(async move {
        let result = write_loop(&mut w, rx, kernel, limiter).await;
        // Senders waiting for room must not wait for a writer that is gone.
        task_budget.close();
        result.map(|()| w)
    })
    .detach();
    (FrameSender { tx, budget, kernel_sends }, handle)
}

async fn write_loop<W: AsyncWrite + Unpin>(
    w: &mut W,
    rx: flume::Receiver<Queued>,
    kernel: Option<KernelSocket>,
    limiter: Option<Arc<RateLimiter>>,
) -> Result<(), std::io::Error> {
    {
        let mut batch = Vec::with_capacity(COALESCED_BYTES_MAX);
        let mut closing = false;
        let mut yielded = false;
        while let Ok(first) = rx.recv_async().await {
            // Small frames are coalesced into one write; a frame of a TLS record or more
            // (chunk data) is written from its own buffer, not copied again.
            let mut next = Some(first);
            while let Some(Queued { item, _permit }) = next.take() {
                if let Some(limiter) = &limiter {
                    // The job's bandwidth limit: wait for this item's share.
                    let wait = limiter.delay(item.bytes());
                    if !wait.is_zero() {
                        if !batch.is_empty() {
                            w.write_all(&batch).await?;
                            batch.clear();
                        }
                        w.flush().await?;
                        glommio::timer::sleep(wait).await;
                    }
                }
                match item {
                    Item::Frame(frame) if frame.len() >= DIRECT_WRITE_BYTES_MIN => {
                        if !batch.is_empty() {
                            w.write_all(&batch).await?;
                            batch.clear();
                        }
                        w.write_all(&frame).await?;
                    }
                    Item::Frame(frame) => batch.extend_from_slice(&frame),
                    Item::Spliced(frame) if frame.range.len() < DIRECT_WRITE_BYTES_MIN => {
                        // A small body is cheaper copied than written on its own.
                        batch.extend_from_slice(&frame.head);
                        batch.extend_from_slice(&(*frame.body).as_ref()[frame.range.clone()]);
                        batch.extend_from_slice(&frame.tail);
                    }
                    Item::Spliced(frame) => {
                        // What is coalesced so far and the head go with the body, in
                        // one vectored write; the tail starts the next batch.
                        batch.extend_from_slice(&frame.head);
                        let body = &(*frame.body).as_ref()[frame.range.clone()];
                        write_all_vectored(w, &mut [IoSlice::new(&batch), IoSlice::new(body)]).await?;
                        batch.clear();
                        batch.extend_from_slice(&frame.tail);
                    }
                    Item::Close => {
                        closing = true;
                        break;
                    }
                    Item::Parts(parts) => {
                        // Everything queued before goes first.
                        if !batch.is_empty() {
                            w.write_all(&batch).await?;
                            batch.clear();
                        }
                        w.flush().await?;
                        send_from_files(kernel.as_ref(), parts).await?;
                    }
                }
                drop(_permit);
                if batch.len() < COALESCED_BYTES_MAX {
                    next = rx.try_recv().ok();
                    if next.is_none() && !batch.is_empty() && !yielded {
                        // The session's other tasks (the producer, the reply handler)
                        // often have a frame more to queue: let them run once, so that
                        // a small file's frames leave in one record and one send
                        // instead of one each.
                        yielded = true;
                        futures_lite::future::yield_now().await;
                        next = rx.try_recv().ok();
                    }
                }
            }
            yielded = false;
            if !batch.is_empty() {
                w.write_all(&batch).await?;
                batch.clear();
            }
            if closing {
                break;
            }
            if rx.is_empty() {
                w.flush().await?;
            }
        }
        drop(rx);
        // Close our direction (TLS close_notify, then FIN) so that the peer sees the
        // end of the session even while our reader still waits for its frames.
        w.close().await
    }
}

/// Writes every byte of `bufs`, in order.
async fn write_all_vectored<W: AsyncWrite + Unpin>(w: &mut W, mut bufs: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs).await? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => IoSlice::advance_slices(&mut bufs, n),
        }
    }
    Ok(())
}

/// Runs one `Parts` item on a blocking thread (the socket is borrowed through its
/// duplicate, which outlives the call) and counts what went out.
async fn send_from_files(kernel: Option<&KernelSocket>, parts: Vec<Part>) -> Result<(), std::io::Error> {
    let Some(kernel) = kernel else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "file ranges queued on a session whose TLS records are not made by the kernel",
        ));
    };
    let fd = kernel.fd.clone();
    let sent = glommio::executor().spawn_blocking(move || send_parts(fd.as_fd(), &parts, SEND_STALL_LIMIT)).await?;
    kernel.wire_bytes.set(kernel.wire_bytes.get() + sent.bytes_total);
    kernel.metrics.chunk_bytes_sendfile_total.fetch_add(sent.bytes_from_file, Ordering::Relaxed);
    kernel.metrics.sendfile_bytes_padded_total.fetch_add(sent.bytes_padded, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::fd::borrowed_fd;
    use std::io::{Read, Write};

    use super::*;
    use crate::sendfile::FileRange;

    /// A loopback peer that returns everything it reads until the writer closes.
    fn peer_reading_to_end() -> (std::net::SocketAddr, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            got
        });
        (addr, reader)
    }

    /// Frames queued as bytes and frames whose bodies the kernel sends from a file
    /// reach the peer in queue order, and the session's counters see both.
    #[test]
    fn file_ranges_and_frames_keep_their_queue_order() {
        let (addr, reader) = peer_reading_to_end();
        let content: Vec<u8> = (0..1_500_000u32).map(|i| (i % 253) as u8).collect();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&content).unwrap();
        let file = Arc::new(OwnedFd::from(file));
        let metrics = Arc::new(WorkerMetrics::default());
        let m = metrics.clone();
        let wire_bytes = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let wb = Rc::new(Cell::new(0u64));
                let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
                let dup = borrowed_fd(&tcp).try_clone_to_owned().unwrap();
                let kernel = KernelSocket { fd: Arc::new(dup), wire_bytes: wb.clone(), metrics: m };
                let (sender, task) = spawn_writer(tcp, Some(kernel), None);
                assert!(sender.kernel_sends());
                sender.send_encoded(b"small-1".to_vec()).await.unwrap();
                sender
                    .send_parts(vec![
                        Part::Bytes(b"<head>".to_vec()),
                        Part::File(FileRange { file: file.clone(), offset: 100, bytes: 1_000_000 }),
                        Part::Bytes(b"<tail>".to_vec()),
                    ])
                    .await
                    .unwrap();
                sender.send_encoded(vec![7u8; 40_000]).await.unwrap();
                sender.send_encoded(b"small-2".to_vec()).await.unwrap();
                drop(sender);
                task.await.unwrap().unwrap();
                wb.get()
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        let want = [&b"small-1<head>"[..], &content[100..1_000_100], b"<tail>", &[7u8; 40_000], b"small-2"].concat();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the stream is not in queue order");
        assert_eq!(metrics.chunk_bytes_sendfile_total.load(Ordering::Relaxed), 1_000_000);
        assert_eq!(wire_bytes, 1_000_012, "the kernel's sends are counted on the wire");
    }

    struct Shared(Vec<u8>);
    impl AsRef<[u8]> for Shared {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }

    /// Frames whose bodies are written from a shared buffer come out whole and in queue
    /// order among coalesced and direct frames; the buffer is let go once written, and a
    /// body outside its buffer is refused at the queue.
    #[test]
    fn spliced_frames_keep_their_queue_order_and_let_their_buffer_go() {
        let (addr, reader) = peer_reading_to_end();
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let buffer = content.clone();
        let released = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
                let (sender, task) = spawn_writer(tcp, None, None);
                let body: Rc<dyn AsRef<[u8]>> = Rc::new(Shared(buffer));
                let weak = Rc::downgrade(&body);
                let spliced = |range: Range<usize>| SplicedFrame {
                    head: b"<h>".to_vec(),
                    body: body.clone(),
                    range,
                    tail: b"<t>".to_vec(),
                };
                let outside = sender.send_spliced(spliced(299_990..300_001)).await.unwrap_err();
                assert_eq!(outside.kind(), std::io::ErrorKind::InvalidInput);
                sender.send_encoded(b"small-1".to_vec()).await.unwrap();
                sender.send_spliced(spliced(10..200_010)).await.unwrap();
                sender.send_encoded(vec![7u8; 40_000]).await.unwrap();
                sender.send_spliced(spliced(5..5)).await.unwrap();
                sender.send_encoded(b"small-2".to_vec()).await.unwrap();
                sender.send_spliced(spliced(299_000..300_000)).await.unwrap();
                drop(sender);
                task.await.unwrap().unwrap();
                drop(body);
                weak.upgrade().is_none()
            })
            .unwrap()
            .join()
            .unwrap();
        let got = reader.join().unwrap();
        let want = [
            &b"small-1<h>"[..],
            &content[10..200_010],
            b"<t>",
            &[7u8; 40_000],
            b"<h><t>small-2<h>",
            &content[299_000..],
            b"<t>",
        ]
        .concat();
        assert_eq!(got.len(), want.len());
        assert!(got == want, "the stream is not in queue order");
        assert!(released, "the writer still holds the shared buffer");
    }

    #[test]
    fn file_ranges_on_a_rustls_session_are_refused_not_sent_in_clear() {
        let (addr, reader) = peer_reading_to_end();
        let file = Arc::new(OwnedFd::from(tempfile::tempfile().unwrap()));
        let result = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let tcp = glommio::net::TcpStream::connect(addr).await.unwrap();
                let (sender, task) = spawn_writer(tcp, None, None);
                assert!(!sender.kernel_sends());
                sender.send_parts(vec![Part::File(FileRange { file, offset: 0, bytes: 10 })]).await.unwrap();
                drop(sender);
                task.await.map(|r| r.map(|_| ()))
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(result.expect("the writer task ran").unwrap_err().kind(), std::io::ErrorKind::Unsupported);
        assert!(reader.join().unwrap().is_empty());
    }
}
