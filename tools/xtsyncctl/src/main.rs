//! `xtsyncctl`: the operator's command line.

mod cert;
mod client;
mod output;
mod quickstart;
mod rates;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use xtsync_api::{JobOptions, JobSpec};

use client::Client;
use output::{bytes, print_summary, state_name, table, wait_for_run};

#[derive(Parser, Debug)]
#[command(name = "xtsyncctl", version, about = "Operate an xtsync cluster")]
struct Cli {
    /// A coordinator's REST address; repeat it (or separate with commas) for every
    /// coordinator of the cluster: requests find the leader among them.
    #[arg(long, global = true, env = "XTSYNC_COORDINATOR", default_value = "127.0.0.1:7400", value_delimiter = ',')]
    coordinator: Vec<String>,
    /// Machine-readable output.
    #[arg(long, global = true)]
    json: bool,
    /// Client certificate for the coordinator (role admin; default: admin.crt in the PKI directory).
    #[arg(long, global = true, env = "XTSYNC_CERT")]
    cert: Option<PathBuf>,
    #[arg(long, global = true, env = "XTSYNC_KEY")]
    key: Option<PathBuf>,
    /// The cluster CA the coordinator's certificate must come from.
    #[arg(long, global = true, env = "XTSYNC_CA")]
    ca: Option<PathBuf>,
    /// The CA's revocation list (default: ca.crl beside the default certificate).
    #[arg(long, global = true, env = "XTSYNC_CRL")]
    crl: Option<PathBuf>,
    /// Where the default certificate is looked for (then ./xtsync-quickstart/pki).
    #[arg(long, global = true, env = "XTSYNC_PKI_DIR", default_value = cert::PKI_DIR_DEFAULT)]
    pki_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Cluster, workers and jobs at a glance.
    Status,
    /// Initialize the coordinators' metadata store (the Raft group).
    InitDb,
    /// Manage replication jobs.
    #[command(subcommand)]
    Job(JobCommand),
    /// Compare a job's target with its source now (one full pass; a live continuous run
    /// does it in order with its changes) and report what differed.
    Reconcile {
        /// The target directory of the job (as given to `job create --target`).
        #[arg(long)]
        target: String,
    },
    /// Run a complete local cluster (coordinator + two workers) replicating a tree.
    Quickstart(quickstart::QuickstartArgs),
    /// The cluster's certificate authority: init-ca, issue, list, revoke.
    #[command(subcommand)]
    Cert(cert::CertCommand),
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum JobCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        source_worker: String,
        #[arg(long)]
        source: String,
        #[arg(long)]
        target_worker: String,
        #[arg(long)]
        target: String,
        /// Propagate deletions.
        #[arg(long)]
        delete: bool,
        #[arg(long, default_value = "auto")]
        compression: String,
        /// An agent (certificate name) allowed to read this job; repeat for several.
        #[arg(long = "agent")]
        agents: Vec<String>,
        /// Keep replicating: watch the source and replicate every change (`job run`
        /// starts it; it runs until the worker stops).
        #[arg(long)]
        continuous: bool,
        /// Continuous jobs: how long changes are gathered into one batch.
        #[arg(long, default_value_t = xtsync_api::job::BATCH_WINDOW_MS_DEFAULT)]
        batch_window_ms: u32,
        /// Seconds between passes that check every entry at the target (continuous jobs:
        /// a full reconciliation pass this often; one-shot jobs: a pass checks everything
        /// when the last one that did is older). 0: never on its own.
        #[arg(long, default_value_t = 3600)]
        reconcile_interval_s: u32,
        /// Bandwidth for the job's sessions together, e.g. 20MB/s (default unlimited).
        #[arg(long, value_parser = rates::parse_rate, default_value = "unlimited")]
        rate_limit: u64,
        /// A daily window with its own rate, HH:MM-HH:MM=RATE in the source worker's
        /// local time (e.g. 08:00-18:00=5MB/s); repeat for several.
        #[arg(long = "rate-window", value_parser = rates::parse_window)]
        rate_windows: Vec<xtsync_api::RateWindow>,
    },
    List,
    Show {
        id: u64,
    },
    /// Start a pass and wait for it (a continuous job: start it and return).
    Run {
        id: u64,
    },
    Delete {
        id: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("XTSYNC_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let command = match cli.command {
        Command::Cert(cmd) => return cert::run(cmd, cli.json),
        other => other,
    };
    rt.block_on(async move {
        if let Command::Quickstart(mut args) = command {
            args.json |= cli.json;
            return quickstart::run(args).await;
        }
        let files = client::credentials(cli.cert, cli.key, cli.ca, cli.crl, &cli.pki_dir)?;
        let client = Client::new(&cli.coordinator, &files)?;
        match command {
            Command::Status => status(&client, cli.json).await,
            Command::InitDb => {
                let r = client.init().await?;
                if cli.json {
                    println!("{r}")
                } else {
                    println!("metadata store initialized")
                }
                Ok(())
            }
            Command::Job(cmd) => job(&client, cmd, cli.json).await,
            Command::Reconcile { target } => reconcile(&client, &target, cli.json).await,
            Command::Quickstart(_) | Command::Cert(_) => unreachable!("handled above"),
        }
    })
}

/// A job's latest run, as `status` shows it: for a continuous job, its lag (RPO).
#[derive(serde::Serialize)]
struct JobState {
    job: String,
    continuous: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    run: Option<xtsync_api::Run>,
}

async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let members = client.members().await;
    let s = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            // Without a leader, each coordinator's own view says why.
            print_members(&members, json)?;
            return Err(e);
        }
    };
    let mut jobs = Vec::new();
    for job in client.jobs().await? {
        // A continuous job's state is its latest continuous run, not a reconcile pass.
        let continuous = job.spec.options.continuous;
        let run = client.runs(job.id).await?.into_iter().filter(|r| !(continuous && r.reconcile)).max_by_key(|r| r.id);
        jobs.push(JobState { job: job.spec.name, continuous: job.spec.options.continuous, run });
    }
    if json {
        #[derive(serde::Serialize)]
        struct Full<'a> {
            #[serde(flatten)]
            cluster: &'a xtsync_api::ClusterStatus,
            jobs: &'a [JobState],
            coordinators: &'a [client::Member],
        }
        println!("{}", serde_json::to_string(&Full { cluster: &s, jobs: &jobs, coordinators: &members })?);
        return Ok(());
    }
    print_members(&members, false)?;
    println!(
        "coordinator {}: leader {}, term {}, applied {}, {} jobs, {} runs active, {} catalog versions",
        s.node_id,
        s.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
        s.term,
        s.last_applied_index,
        s.jobs,
        s.runs_active,
        s.catalog_versions
    );
    let rows: Vec<Vec<String>> = s
        .workers
        .iter()
        .map(|w| {
            vec![
                w.registration.name.clone(),
                w.registration.site.clone(),
                w.registration.data_addr.clone(),
                w.registration.cores.to_string(),
                if w.alive { "alive".into() } else { "unreachable".into() },
            ]
        })
        .collect();
    table(&["worker", "site", "data address", "cores", "state"], &rows);
    let rows: Vec<Vec<String>> = jobs.iter().map(job_row).collect();
    if !rows.is_empty() {
        println!();
        table(
            &[
                "job",
                "mode",
                "run",
                "state",
                "passes",
                "lag",
                "changes",
                "files pending",
                "bytes pending",
                "waiting for",
            ],
            &rows,
        );
    }
    Ok(())
}

/// The coordinators table, and a warning when fewer than a majority answer.
fn print_members(members: &[client::Member], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(&serde_json::json!({ "coordinators": members }))?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| match &m.view {
            Some(v) => vec![
                m.addr.clone(),
                v.node_id.to_string(),
                v.role.clone(),
                v.term.to_string(),
                v.last_applied_index.to_string(),
                v.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "none".into()),
            ],
            None => {
                let why = m.error.clone().unwrap_or_default();
                vec![m.addr.clone(), "-".into(), "unreachable".into(), "-".into(), "-".into(), why]
            }
        })
        .collect();
    table(&["coordinator", "node", "role", "term", "applied", "leader"], &rows);
    let answering = members.iter().filter(|m| m.view.is_some()).count();
    if members.len() > 1 && answering <= members.len() / 2 {
        println!(
            "WARNING: {answering} of {} coordinators answer: no quorum, the cluster takes no writes",
            members.len()
        );
    }
    println!();
    Ok(())
}

async fn reconcile(client: &Client, target: &str, json: bool) -> anyhow::Result<()> {
    let jobs = client.jobs().await?;
    let canonical = std::fs::canonicalize(target).ok();
    let job = jobs
        .iter()
        .find(|j| j.spec.target_path == target || canonical.as_deref() == Some(Path::new(&j.spec.target_path)))
        .ok_or_else(|| {
            let known: Vec<&str> = jobs.iter().map(|j| j.spec.target_path.as_str()).collect();
            anyhow::anyhow!("no job replicates to {target} (job targets: {known:?})")
        })?;
    let run = client.start_reconcile(job.id).await?;
    let done = wait_for_run(client, run.id, json).await?;
    if json {
        println!("{}", serde_json::to_string(&done)?);
    }
    let summary = match (&done.state, &done.summary) {
        (xtsync_api::RunState::Succeeded, Some(s)) => s,
        (state, _) => anyhow::bail!("reconciliation run {} {}", done.id, state_name(state)),
    };
    if !json {
        println!(
            "job {}: {} of {} files differed and were sent again, {} entries removed from the target, {} files unchanged ({:.2} s)",
            job.spec.name,
            summary.files_transferred,
            summary.files,
            summary.entries_deleted,
            summary.files_unchanged,
            summary.duration_s
        );
        print_paths("differed", &summary.differed, summary.files_transferred);
        print_paths("removed", &summary.removed, summary.entries_deleted);
    }
    Ok(())
}

/// One line per path, then how many were not listed (a summary lists the first ones).
fn print_paths(what: &str, paths: &[String], count: u64) {
    for path in paths {
        println!("  {what:<8} {path}");
    }
    let unlisted = count.saturating_sub(paths.len() as u64);
    if unlisted > 0 && !paths.is_empty() {
        println!("  ... and {unlisted} more {what}");
    }
}

fn job_row(j: &JobState) -> Vec<String> {
    let mode = if j.continuous { "continuous" } else { "on demand" }.to_string();
    let Some(run) = &j.run else {
        return vec![
            j.job.clone(),
            mode,
            "-".into(),
            "never run".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
        ];
    };
    let p = &run.progress;
    let running = run.state == xtsync_api::RunState::Running;
    let live = j.continuous && running;
    vec![
        j.job.clone(),
        mode,
        run.id.to_string(),
        output::state_name(&run.state).to_string(),
        if j.continuous { p.passes_done.to_string() } else { "-".into() },
        if live { format!("{} ms", p.lag_ms) } else { "-".into() },
        if live { p.changes_pending.to_string() } else { "-".into() },
        if running { p.files_pending.to_string() } else { "-".into() },
        if running { output::bytes(p.bytes_pending) } else { "-".into() },
        p.waiting_for.clone().unwrap_or_else(|| "-".into()),
    ]
}

async fn job(client: &Client, cmd: JobCommand, json: bool) -> anyhow::Result<()> {
    match cmd {
        JobCommand::Create {
            name,
            source_worker,
            source,
            target_worker,
            target,
            delete,
            compression,
            agents,
            continuous,
            batch_window_ms,
            reconcile_interval_s,
            rate_limit,
            rate_windows,
        } => {
            let compression = compression.parse().map_err(anyhow::Error::msg)?;
            let spec = JobSpec {
                name,
                source_worker,
                source_path: source,
                target_worker,
                target_path: target,
                options: JobOptions {
                    delete,
                    compression,
                    continuous,
                    batch_window_ms,
                    reconcile_interval_s,
                    rate_limit_bytes_per_s: rate_limit,
                    rate_schedule: rate_windows,
                    ..JobOptions::default()
                },
                agents,
            };
            let job = client.create_job(&spec).await?;
            if json {
                println!("{}", serde_json::to_string(&job)?)
            } else {
                println!("job {} created", job.id)
            }
        }
        JobCommand::List => {
            let jobs = client.jobs().await?;
            if json {
                println!("{}", serde_json::to_string(&jobs)?);
            } else {
                let rows: Vec<Vec<String>> = jobs
                    .iter()
                    .map(|j| {
                        let s = &j.spec;
                        vec![
                            j.id.to_string(),
                            s.name.clone(),
                            format!("{}:{}", s.source_worker, s.source_path),
                            format!("{}:{}", s.target_worker, s.target_path),
                        ]
                    })
                    .collect();
                table(&["id", "name", "source", "target"], &rows);
            }
        }
        JobCommand::Show { id } => {
            let job = client.job(id).await?;
            let runs: Vec<xtsync_api::Run> =
                client.get(&format!("/v1/jobs/{id}/runs")).await.context("listing runs")?;
            if json {
                println!("{}", serde_json::json!({"job": job, "runs": runs}));
            } else {
                println!(
                    "job {} {:?}: {}:{} -> {}:{}",
                    job.id,
                    job.spec.name,
                    job.spec.source_worker,
                    job.spec.source_path,
                    job.spec.target_worker,
                    job.spec.target_path
                );
                let rows: Vec<Vec<String>> = runs
                    .iter()
                    .rev()
                    .take(10)
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            state_name(&r.state),
                            r.progress.files_done.to_string(),
                            bytes(r.summary.as_ref().map(|s| s.bytes_on_wire).unwrap_or(0)),
                        ]
                    })
                    .collect();
                table(&["run", "state", "files done", "on wire"], &rows);
            }
        }
        JobCommand::Run { id } => {
            let continuous = client.job(id).await?.spec.options.continuous;
            let run = client.start_run(id).await?;
            if continuous {
                // It does not end: say where to watch it.
                if json {
                    println!("{}", serde_json::to_string(&run)?);
                } else {
                    println!("continuous run {} started; `xtsyncctl status` shows its lag", run.id);
                }
                return Ok(());
            }
            let done = wait_for_run(client, run.id, json).await?;
            if json {
                println!("{}", serde_json::to_string(&done)?);
            } else if let Some(s) = &done.summary {
                print_summary(s);
            }
            if !matches!(done.state, xtsync_api::RunState::Succeeded) {
                anyhow::bail!("run {} {}", done.id, state_name(&done.state));
            }
        }
        JobCommand::Delete { id } => {
            client.delete_job(id).await?;
            if !json {
                println!("job {id} deleted");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: xtsync_api::RunState, lag_ms: u64, waiting: Option<&str>) -> xtsync_api::Run {
        serde_json::from_value(serde_json::json!({
            "id": 7, "job_id": 1, "state": "pending", "created_unix_ms": 1,
            "progress": {
                "passes_done": 3, "lag_ms": lag_ms, "changes_pending": 2, "files_pending": 1,
                "bytes_pending": 1_500_000, "waiting_for": waiting
            }
        }))
        .map(|mut r: xtsync_api::Run| {
            r.state = state;
            r
        })
        .unwrap()
    }

    #[test]
    fn a_running_continuous_job_shows_its_lag_and_what_it_waits_for() {
        let live = JobState {
            job: "dr".into(),
            continuous: true,
            run: Some(run(xtsync_api::RunState::Running, 42, Some("target unreachable"))),
        };
        assert_eq!(
            job_row(&live),
            ["dr", "continuous", "7", "running", "3", "42 ms", "2", "1", "1.5 MB", "target unreachable"]
        );
        let once = JobState {
            job: "nightly".into(),
            continuous: false,
            run: Some(run(xtsync_api::RunState::Succeeded, 0, None)),
        };
        assert_eq!(job_row(&once), ["nightly", "on demand", "7", "succeeded", "-", "-", "-", "-", "-", "-"]);
        let never = JobState { job: "new".into(), continuous: true, run: None };
        assert_eq!(job_row(&never)[3], "never run");
    }
}
