//! What runs on each core: the data-plane listener and a command loop through which the
//! control thread starts source sessions there. All task queues of an executor are
//! created here, in one place.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use xtsync_link::secure::KtlsPolicy;
use xtsync_metrics::WorkerMetrics;
use xtsync_receiver::listener::{accept_loop, bind};
use xtsync_receiver::session::TargetContext;
use xtsync_sender::session::run_session;
use xtsync_sender::CoreCommand;

pub struct CoreSetup {
    pub data_listen: SocketAddr,
    pub store: Arc<dyn xtsync_store::WorkerStore>,
    pub partials: Arc<xtsync_receiver::checkpoint::KeptPartials>,
    /// Reloaded on file change or SIGHUP: each accepted connection takes the current one.
    pub server_tls: xtsync_transport::ReloadingTls,
    pub ktls: KtlsPolicy,
    /// `transfer.small_batch_sync: per_file`.
    pub per_file_sync: bool,
    pub metrics: Arc<WorkerMetrics>,
    pub admission: xtsync_receiver::admission::Admission,
    /// Each executor reports here once its data listener is bound (or why it is not):
    /// the worker registers only when every core accepts sessions.
    pub listening: flume::Sender<(usize, Result<(), String>)>,
}

/// The body of executor `core`: runs until the command channel closes.
pub async fn core_main(core: usize, setup: Arc<CoreSetup>, commands: flume::Receiver<CoreCommand>) {
    let ctx = Rc::new(TargetContext {
        store: setup.store.clone(),
        partials: setup.partials.clone(),
        tls: setup.server_tls.clone(),
        ktls: setup.ktls,
        per_file_sync: setup.per_file_sync,
        metrics: setup.metrics.clone(),
        core,
        admission: setup.admission.clone(),
    });
    match bind(setup.data_listen) {
        Ok(listener) => {
            let _ = setup.listening.send((core, Ok(())));
            glommio::spawn_local(accept_loop(listener, ctx)).detach();
        }
        Err(e) => {
            let _ = setup.listening.send((core, Err(format!("cannot listen on {}: {e}", setup.data_listen))));
        }
    }
    while let Ok(cmd) = commands.recv_async().await {
        match cmd {
            CoreCommand::StartSource { params, passes, events } => {
                glommio::spawn_local(run_session(params, passes, events)).detach();
            }
        }
    }
}
