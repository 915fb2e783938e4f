//! Accepting data-plane connections on every core (SO_REUSEPORT: the kernel spreads
//! connections across the executors' listeners).

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use crate::session::{serve, TargetContext};

/// Binds this executor's listener (SO_REUSEPORT, as glommio does) on `addr`.
pub fn bind(addr: SocketAddr) -> glommio::Result<glommio::net::TcpListener, ()> {
    glommio::net::TcpListener::bind(addr)
}

pub async fn accept_loop(listener: glommio::net::TcpListener, ctx: Rc<TargetContext>) {
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
