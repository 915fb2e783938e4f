//! Accepting data-plane connections on every core (SO_REUSEPORT: the kernel spreads
//! connections across the executors' listeners).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::target::session::{serve, TargetContext};

pub async fn accept_loop(addr: SocketAddr, ctx: Rc<TargetContext>) {
    let listener = match glommio::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(%addr, core = ctx.core, error = %e, "cannot listen for data-plane sessions");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(stream, ctx.clone())).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
