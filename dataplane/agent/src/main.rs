//! `xtsync-agent`: the endpoint agent (see the crate documentation and the README's
//! "Agents" section).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use xtsync_agent::{modes, profile};
use xtsync_worker::daemon::{load_config, run, DaemonFlags};

#[derive(Parser, Debug)]
#[command(
    name = "xtsync-agent",
    version,
    about = "xtsync endpoint agent: push a local directory to a worker, or keep a local copy of a job's tree"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Run continuous job ID, whose source is this agent: watch its source directory
    /// and push every change to the job's target worker. Only dials out.
    Push {
        #[arg(long)]
        job: u64,
        #[command(flatten)]
        daemon: DaemonFlags,
    },
    /// Keep a copy of job ID's tree in DIR: a continuous job of this agent (created
    /// once, reused afterwards) from job ID's source worker into DIR. The source worker
    /// connects to this agent's advertised data address.
    Pull {
        #[arg(long)]
        job: u64,
        /// The local copy (created if missing; owned by the agent: what is not at the
        /// source is deleted).
        #[arg(long)]
        dir: PathBuf,
        #[command(flatten)]
        daemon: DaemonFlags,
    },
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run_mode(args.mode) {
        // The executors still run: end the process here.
        Ok(()) => std::process::exit(0),
        Err(e) => {
            // One line an operator can act on (no backtrace): what failed and why.
            eprintln!("xtsync-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_mode(mode: Mode) -> anyhow::Result<()> {
    match mode {
        Mode::Push { job, mut daemon } => {
            let config = load_config(&daemon)?;
            // Nobody connects to a pushing agent: its data port stays on loopback.
            daemon.data_listen.get_or_insert(SocketAddr::from(([127, 0, 0, 1], 0)));
            run(&daemon, &config, profile::AGENT, move |started| async move {
                modes::push(started, job).await.map_err(|e| e.to_string())
            })?;
        }
        Mode::Pull { job, dir, daemon } => {
            let config = load_config(&daemon)?;
            let advertise = daemon.advertise.clone().unwrap_or_else(|| match daemon.data_listen {
                Some(listen) => listen.to_string(),
                None => config.networking.data_advertise.clone(),
            });
            if advertise.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified() || a.port() == 0) {
                bail!(
                    "pull mode: the source worker connects to this agent at its advertised address, and {advertise} cannot be dialed; pass --advertise HOST:PORT (or networking.advertise_address) and a fixed --data-listen port"
                );
            }
            let dir = modes::prepare_dir(&dir)?;
            let dir = dir.to_str().context("the pull directory's path is not UTF-8")?.to_string();
            run(&daemon, &config, profile::AGENT, move |started| async move {
                modes::pull(started, job, dir).await.map_err(|e| e.to_string())
            })?;
        }
    }
    Ok(())
}
