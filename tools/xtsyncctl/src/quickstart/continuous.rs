//! `xtsyncctl quickstart` without `--once`: the job is continuous. Waits for the run's
//! first (full) pass, verifies the target, then prints the replication lag every
//! `--interval-s` until interrupted. Like a service manager (the systemd units say
//! `Restart=on-failure`), it starts a daemon that died again; the run resumes.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use serde::Serialize;
use xtsync_api::Run;

use super::daemons::Daemon;
use super::{compare_trees, QuickstartArgs};
use crate::client::Client;

pub struct Daemons<'a> {
    pub coordinator: &'a mut Daemon,
    pub workers: &'a mut Vec<Daemon>,
}

/// One status line (`--json`: one object per line).
#[derive(Serialize)]
struct Status {
    run_id: u64,
    passes_done: u64,
    files_done: u64,
    lag_ms: u64,
    changes_pending: u64,
    files_pending: u64,
    bytes_pending: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    waiting_for: Option<String>,
}

pub async fn replicate(
    client: &Client,
    job_id: u64,
    source: &Path,
    target: &Path,
    args: &QuickstartArgs,
    mut daemons: Daemons<'_>,
) -> anyhow::Result<()> {
    let run = client.start_run(job_id).await?;
    // Kept across the loop's iterations: the crash-loop limit spans them.
    let mut restarts = Restarts::default();
    tokio::select! {
        r = first_pass(client, run.id) => { r?; }
        dead = supervise(&mut daemons, &mut restarts) => return Err(dead),
        _ = tokio::signal::ctrl_c() => return Ok(()),
    }
    let diffs = compare_trees(source, target, args.verify_content, 10)?;
    if !args.json {
        if diffs.is_empty() {
            println!("first pass verified; replicating every change (Ctrl-C to stop)");
        } else {
            // The source may have changed since the pass: those changes follow.
            println!("first pass done; {} paths differ now (changes since are on their way)", diffs.len());
        }
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(args.interval_s.max(1))) => {}
            dead = supervise(&mut daemons, &mut restarts) => return Err(dead),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        // The coordinator may be restarting (see `supervise`): say so and ask again.
        let run = match client.run(run.id).await {
            Ok(run) => run,
            Err(e) => {
                eprintln!("status unavailable: {e:#}");
                continue;
            }
        };
        if run.state.is_finished() {
            bail!("the continuous run ended: {}", crate::output::state_name(&run.state));
        }
        print_status(&run, args.json)?;
    }
}

/// Restarts daemons that exit; resolves to an error only when one of them keeps dying
/// (more than `RESTARTS_MAX` restarts of the same daemon within `RESTART_WINDOW`, like
/// systemd's start limit).
type Restarts = std::collections::HashMap<String, Vec<std::time::Instant>>;

async fn supervise(daemons: &mut Daemons<'_>, restarts: &mut Restarts) -> anyhow::Error {
    const RESTARTS_MAX: usize = 10;
    const RESTART_WINDOW: Duration = Duration::from_secs(10);
    loop {
        let all = std::iter::once(&mut *daemons.coordinator).chain(daemons.workers.iter_mut());
        for d in all {
            match d.restart_if_exited() {
                Ok(None) => continue,
                Ok(Some(status)) => eprintln!("{} exited ({status}); started it again", d.name),
                Err(e) => return e.context(format!("restarting {}", d.name)),
            }
            let times = restarts.entry(d.name.clone()).or_default();
            times.retain(|t| t.elapsed() < RESTART_WINDOW);
            times.push(std::time::Instant::now());
            if times.len() > RESTARTS_MAX {
                return anyhow::anyhow!(
                    "{} keeps exiting ({} restarts within {RESTART_WINDOW:?}); log: {}",
                    d.name,
                    times.len(),
                    d.log.display()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the run has finished its first pass (or failed).
async fn first_pass(client: &Client, run_id: u64) -> anyhow::Result<()> {
    loop {
        let Ok(run) = client.run(run_id).await else {
            // Restarting (see `supervise`).
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if run.state.is_finished() {
            bail!("the continuous run ended: {}", crate::output::state_name(&run.state));
        }
        if run.progress.passes_done >= 1 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn print_status(run: &Run, json: bool) -> anyhow::Result<()> {
    let p = &run.progress;
    let status = Status {
        run_id: run.id,
        passes_done: p.passes_done,
        files_done: p.files_done,
        lag_ms: p.lag_ms,
        changes_pending: p.changes_pending,
        files_pending: p.files_pending,
        bytes_pending: p.bytes_pending,
        waiting_for: p.waiting_for.clone(),
    };
    if json {
        println!("{}", serde_json::to_string(&status)?);
    } else {
        let waiting = status.waiting_for.as_deref().map(|w| format!(" · waiting: {w}")).unwrap_or_default();
        println!(
            "lag {} ms · {} changes, {} files, {} pending · {} passes · {} files replicated{waiting}",
            status.lag_ms,
            status.changes_pending,
            status.files_pending,
            crate::output::bytes(status.bytes_pending),
            status.passes_done,
            status.files_done
        );
    }
    Ok(())
}
