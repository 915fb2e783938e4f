//! `xtsync-worker`: the data-plane daemon (start-up in `xtsync_worker::daemon`).

#![forbid(unsafe_code)]

use clap::Parser;
use xtsync_worker::daemon::{load_config, run, DaemonFlags, Profile};

#[derive(Parser, Debug)]
#[command(name = "xtsync-worker", version, about = "xtsync data-plane worker")]
struct Args {
    #[command(flatten)]
    daemon: DaemonFlags,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = load_config(&args.daemon)?;
    run(&args.daemon, &config, Profile::WORKER, |_| async { Ok(()) })?;
    std::process::exit(0)
}
