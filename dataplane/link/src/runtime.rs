//! Thread-per-core runtime: one glommio executor pinned to each configured CPU.

use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the executor for CPU {cpu}: {reason}")]
    Executor { cpu: usize, reason: String },
    #[error("memlock resource limit is too low for io_uring ({current} bytes) and could not be raised: {reason}; run as root or set LimitMEMLOCK=infinity in the systemd unit")]
    Memlock { current: String, reason: String },
}

/// io_uring's registered buffers count against RLIMIT_MEMLOCK: raise it where we may.
pub fn raise_memlock_limit() -> Result<(), RuntimeError> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Memlock);
    if current.current.is_none() {
        return Ok(());
    }
    let wanted = Rlimit { current: current.maximum, maximum: current.maximum };
    let unlimited = Rlimit { current: None, maximum: None };
    setrlimit(Resource::Memlock, unlimited)
        .or_else(|_| setrlimit(Resource::Memlock, wanted))
        .map_err(|e| RuntimeError::Memlock { current: format!("{:?}", current.current), reason: e.to_string() })
}

/// Raises the open-files limit to its hard maximum: a target session keeps up to a
/// thousand temporary files open, and a worker runs one session per core and job.
pub fn raise_nofile_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let current = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: current.maximum, maximum: current.maximum });
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok();
    let cpus: Vec<usize> = match set {
        Some(s) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| s.is_set(c)).collect(),
        None => Vec::new(),
    };
    if cpus.is_empty() {
        (0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect()
    } else {
        cpus
    }
}

/// Starts one pinned executor per CPU, each running `body(core_index)`. Returns the
/// threads' join handles.
pub fn start_executors<F, Fut>(cpus: &[usize], body: F) -> Result<Vec<std::thread::JoinHandle<()>>, RuntimeError>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    let mut handles = Vec::new();
    for (index, &cpu) in cpus.iter().enumerate() {
        let body = body.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("xtsync-core{index}"))
            // Small per-executor I/O arena: buffers are mostly our own Vecs.
            .io_memory(2 << 20)
            .ring_depth(256)
            .spin_before_park(Duration::from_micros(0))
            .spawn(move || body(index))
            .map_err(|e| RuntimeError::Executor { cpu, reason: e.to_string() })?;
        handles.push(
            std::thread::Builder::new()
                .name(format!("xtsync-join{index}"))
                .spawn(move || {
                    let _ = handle.join();
                })
                .expect("spawning a join thread"),
        );
    }
    Ok(handles)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_read_files_through_io_uring() {
        raise_memlock_limit().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello io_uring").unwrap();
        let (tx, rx) = flume::unbounded();
        let cpus = allowed_cpus();
        let handles = start_executors(&cpus[..1], move |_| {
            let (path, tx) = (path.clone(), tx.clone());
            async move {
                let f = glommio::io::BufferedFile::open(&path).await.unwrap();
                let data = f.read_at(0, 64).await.unwrap();
                tx.send(data.to_vec()).unwrap();
                f.close().await.unwrap();
            }
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap(), b"hello io_uring");
        for h in handles {
            h.join().unwrap();
        }
    }
}
