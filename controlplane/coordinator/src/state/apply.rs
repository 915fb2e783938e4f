//! Applying one command to the tables: deterministic, no clock, no scans.
//!
//! The outer `Result` is a storage failure (Raft must stop); the inner one is the
//! command's [`Response`] (a refusal is a normal, replicated outcome).

use xtsync_api::{FileVersion, Job, JobId, JobSpec, Run, RunId, RunProgress, RunReport, RunState, WorkerRegistration};

use super::kv::{get_json, put_json, KvError, KvWrite};
use super::VERSIONS_PER_BATCH_MAX;
use super::{keys, validate, CatalogEntry, Command, CommandError, Counters, Outcome, Response};

/// Applies `cmd` to `kv`. On a refusal nothing is written.
pub fn apply(kv: &mut impl KvWrite, cmd: Command) -> Result<Response, KvError> {
    match cmd {
        Command::RegisterWorker(reg) => register_worker(kv, reg),
        Command::CreateJob { spec, created_unix_ms } => create_job(kv, spec, created_unix_ms),
        Command::DeleteJob { id } => delete_job(kv, id),
        Command::CreateRun { job_id, created_unix_ms, reconcile } => create_run(kv, job_id, created_unix_ms, reconcile),
        Command::ReportRun { run_id, report, unix_ms } => report_run(kv, run_id, report, unix_ms),
        Command::CommitVersions { run_id, job_id, versions } => commit_versions(kv, run_id, job_id, versions),
    }
}

fn counters(kv: &impl KvWrite) -> Result<Counters, KvError> {
    Ok(get_json(kv, keys::COUNTERS)?.unwrap_or_default())
}

/// Reads and advances a sequence; ids start at 1.
fn next_id(kv: &mut impl KvWrite, key: &[u8]) -> Result<u64, KvError> {
    let id: u64 = get_json(kv, key)?.unwrap_or(1);
    put_json(kv, key.to_vec(), &(id + 1));
    Ok(id)
}

fn register_worker(kv: &mut impl KvWrite, reg: WorkerRegistration) -> Result<Response, KvError> {
    if let Err(e) = validate::registration(&reg) {
        return Ok(Err(e));
    }
    let key = keys::worker(&reg.name);
    if kv.get(&key)?.is_none() {
        let mut c = counters(kv)?;
        c.workers += 1;
        put_json(kv, keys::COUNTERS.to_vec(), &c);
    }
    // A registration comes from a worker process that just started (or that the
    // coordinator had forgotten): the runs it was running are gone with the old
    // process. They go back to Pending and are handed out again; a continuous run
    // resumes where the target's records and checkpoints say it stopped.
    let running_key = keys::running_of(&reg.name);
    let running: Vec<RunId> = get_json(kv, &running_key)?.unwrap_or_default();
    if !running.is_empty() {
        let mut c = counters(kv)?;
        for run_id in running {
            let Some(mut run) = get_json::<Run>(kv, &keys::run(run_id))? else { continue };
            if run.state != RunState::Running {
                continue;
            }
            count_state(&mut c, &run.state, false);
            run.state = RunState::Pending;
            count_state(&mut c, &run.state, true);
            put_json(kv, keys::pending(run_id), &run.job_id);
            put_json(kv, keys::run(run_id), &run);
        }
        put_json(kv, keys::COUNTERS.to_vec(), &c);
        kv.delete(running_key);
    }
    put_json(kv, key, &reg);
    Ok(Ok(Outcome::Worker(reg)))
}

/// Keeps the list of runs a source worker is running (what its restart requeues).
fn track_running(kv: &mut impl KvWrite, worker: &str, run_id: RunId, running: bool) -> Result<(), KvError> {
    let key = keys::running_of(worker);
    let mut runs: Vec<RunId> = get_json(kv, &key)?.unwrap_or_default();
    runs.retain(|&r| r != run_id);
    if running {
        runs.push(run_id);
    }
    if runs.is_empty() {
        kv.delete(key);
    } else {
        put_json(kv, key, &runs);
    }
    Ok(())
}

fn create_job(kv: &mut impl KvWrite, spec: JobSpec, created_unix_ms: u64) -> Result<Response, KvError> {
    if let Err(e) = validate::job_spec(&spec) {
        return Ok(Err(e));
    }
    for name in [&spec.source_worker, &spec.target_worker] {
        if kv.get(&keys::worker(name))?.is_none() {
            return Ok(Err(CommandError::UnknownWorker { name: name.clone() }));
        }
    }
    let name_key = keys::job_name(&spec.name);
    if let Some(id) = get_json::<JobId>(kv, &name_key)? {
        return Ok(Err(CommandError::DuplicateJobName { name: spec.name, id }));
    }
    let id = next_id(kv, keys::NEXT_JOB_ID)?;
    let job = Job { id, spec, created_unix_ms };
    put_json(kv, name_key, &id);
    put_json(kv, keys::job(id), &job);
    let mut c = counters(kv)?;
    c.jobs += 1;
    put_json(kv, keys::COUNTERS.to_vec(), &c);
    Ok(Ok(Outcome::Job(job)))
}

fn delete_job(kv: &mut impl KvWrite, id: JobId) -> Result<Response, KvError> {
    let Some(job) = get_json::<Job>(kv, &keys::job(id))? else {
        return Ok(Err(CommandError::JobNotFound { id }));
    };
    kv.delete(keys::job(id));
    kv.delete(keys::job_name(&job.spec.name));
    let mut c = counters(kv)?;
    c.jobs = c.jobs.saturating_sub(1);
    put_json(kv, keys::COUNTERS.to_vec(), &c);
    Ok(Ok(Outcome::JobDeleted { id }))
}

fn create_run(
    kv: &mut impl KvWrite,
    job_id: JobId,
    created_unix_ms: u64,
    reconcile: bool,
) -> Result<Response, KvError> {
    if kv.get(&keys::job(job_id))?.is_none() {
        return Ok(Err(CommandError::JobNotFound { id: job_id }));
    }
    let id = next_id(kv, keys::NEXT_RUN_ID)?;
    let run = Run {
        id,
        job_id,
        state: RunState::Pending,
        created_unix_ms,
        finished_unix_ms: None,
        progress: RunProgress::default(),
        summary: None,
        reconcile,
    };
    put_json(kv, keys::run(id), &run);
    kv.put(keys::job_run(job_id, id), Vec::new());
    put_json(kv, keys::pending(id), &job_id);
    let mut c = counters(kv)?;
    c.runs_pending += 1;
    put_json(kv, keys::COUNTERS.to_vec(), &c);
    Ok(Ok(Outcome::Run(run)))
}

fn state_name(s: &RunState) -> &'static str {
    match s {
        RunState::Pending => "pending",
        RunState::Running => "running",
        RunState::Succeeded => "succeeded",
        RunState::Failed { .. } => "failed",
    }
}

/// Pending → anything; Running → Running | Succeeded | Failed; finished → nothing.
pub fn transition_allowed(from: &RunState, to: &RunState) -> bool {
    match from {
        RunState::Pending => true,
        RunState::Running => !matches!(to, RunState::Pending),
        RunState::Succeeded | RunState::Failed { .. } => false,
    }
}

fn count_state(c: &mut Counters, s: &RunState, add: bool) {
    let slot = match s {
        RunState::Pending => &mut c.runs_pending,
        RunState::Running => &mut c.runs_running,
        RunState::Succeeded => &mut c.runs_succeeded,
        RunState::Failed { .. } => &mut c.runs_failed,
    };
    *slot = if add { *slot + 1 } else { slot.saturating_sub(1) };
}

fn report_run(kv: &mut impl KvWrite, run_id: RunId, report: RunReport, unix_ms: u64) -> Result<Response, KvError> {
    let Some(mut run) = get_json::<Run>(kv, &keys::run(run_id))? else {
        return Ok(Err(CommandError::RunNotFound { id: run_id }));
    };
    let job = get_json::<Job>(kv, &keys::job(run.job_id))?;
    if let Some(job) = &job {
        if report.worker != job.spec.source_worker && report.worker != job.spec.target_worker {
            return Ok(Err(CommandError::WrongWorker { run_id, worker: report.worker }));
        }
    }
    if !transition_allowed(&run.state, &report.state) {
        return Ok(Err(CommandError::InvalidTransition {
            run_id,
            from: state_name(&run.state).into(),
            to: state_name(&report.state).into(),
        }));
    }
    let was_pending = run.state == RunState::Pending;
    if state_name(&run.state) != state_name(&report.state) {
        let mut c = counters(kv)?;
        count_state(&mut c, &run.state, false);
        count_state(&mut c, &report.state, true);
        put_json(kv, keys::COUNTERS.to_vec(), &c);
    }
    if was_pending && report.state != RunState::Pending {
        kv.delete(keys::pending(run_id));
    }
    let (was_running, is_running) = (run.state == RunState::Running, report.state == RunState::Running);
    if was_running != is_running {
        // A deleted job's run is ended by the worker that ran it (see heartbeat
        // cancellation): the job no longer names its source.
        let source = job.as_ref().map_or(report.worker.as_str(), |job| job.spec.source_worker.as_str());
        track_running(kv, source, run_id, is_running)?;
    }
    if report.state.is_finished() {
        run.finished_unix_ms = Some(unix_ms);
    }
    run.state = report.state;
    run.progress = report.progress;
    if report.summary.is_some() {
        run.summary = report.summary;
    }
    put_json(kv, keys::run(run_id), &run);
    Ok(Ok(Outcome::Run(run)))
}

fn commit_versions(
    kv: &mut impl KvWrite,
    run_id: RunId,
    job_id: JobId,
    versions: Vec<FileVersion>,
) -> Result<Response, KvError> {
    if versions.len() > VERSIONS_PER_BATCH_MAX {
        return Ok(Err(CommandError::BatchTooLarge { count: versions.len(), max: VERSIONS_PER_BATCH_MAX }));
    }
    let Some(run) = get_json::<Run>(kv, &keys::run(run_id))? else {
        return Ok(Err(CommandError::RunNotFound { id: run_id }));
    };
    if run.job_id != job_id {
        return Ok(Err(CommandError::RunJobMismatch { run_id, run_job_id: run.job_id, job_id }));
    }
    if kv.get(&keys::job(job_id))?.is_none() {
        return Ok(Err(CommandError::JobNotFound { id: job_id }));
    }
    // All-or-nothing: check every path before writing any row.
    if let Some(e) = versions.iter().find_map(|v| validate::catalog_path(&v.path).err()) {
        return Ok(Err(e));
    }
    let mut c = counters(kv)?;
    let total = versions.len() as u64;
    let mut new_versions = 0;
    for v in versions {
        let key = keys::catalog(job_id, &v.path);
        let entry = match get_json::<CatalogEntry>(kv, &key)? {
            Some(e) if e.latest == v => continue,
            Some(e) => CatalogEntry { latest: v, versions: e.versions + 1 },
            None => {
                c.catalog_files += 1;
                CatalogEntry { latest: v, versions: 1 }
            }
        };
        new_versions += 1;
        put_json(kv, key, &entry);
    }
    c.catalog_versions += new_versions;
    put_json(kv, keys::COUNTERS.to_vec(), &c);
    Ok(Ok(Outcome::Committed { versions: total, new_versions }))
}

#[cfg(test)]
mod tests {
    use xtsync_api::{JobOptions, PassSummary};

    use super::*;
    use crate::state::kv::MemKv;
    use crate::state::query;

    fn reg(name: &str) -> WorkerRegistration {
        WorkerRegistration {
            name: name.into(),
            site: "a".into(),
            data_addr: "127.0.0.1:7401".into(),
            http_addr: "127.0.0.1:7402".into(),
            cores: 2,
        }
    }

    fn spec(name: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            source_worker: "src".into(),
            source_path: "/data/in".into(),
            target_worker: "dst".into(),
            target_path: "/data/out".into(),
            options: JobOptions::default(),
            agents: vec![],
        }
    }

    fn ok(kv: &mut MemKv, cmd: Command) -> Outcome {
        apply(kv, cmd).expect("storage").expect("command applies")
    }

    fn refused(kv: &mut MemKv, cmd: Command) -> CommandError {
        let before = kv.map.clone();
        let e = apply(kv, cmd).expect("storage").expect_err("command is refused");
        assert_eq!(kv.map, before, "a refusal writes nothing");
        e
    }

    fn setup() -> MemKv {
        let mut kv = MemKv::default();
        ok(&mut kv, Command::RegisterWorker(reg("src")));
        ok(&mut kv, Command::RegisterWorker(reg("dst")));
        kv
    }

    fn report(state: RunState) -> RunReport {
        RunReport { worker: "src".into(), state, progress: RunProgress::default(), summary: None }
    }

    fn version(path: &str, size: u64) -> FileVersion {
        FileVersion { path: path.into(), size, mtime_ns: 1, mode: 0o644, uid: 0, gid: 0, content_digest: "ab".into() }
    }

    #[test]
    fn job_ids_increase_and_names_are_unique() {
        let mut kv = setup();
        let Outcome::Job(a) = ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 5 }) else { panic!() };
        let Outcome::Job(b) = ok(&mut kv, Command::CreateJob { spec: spec("b"), created_unix_ms: 6 }) else { panic!() };
        assert_eq!((a.id, b.id, b.created_unix_ms), (1, 2, 6));
        let e = refused(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 7 });
        assert_eq!(e, CommandError::DuplicateJobName { name: "a".into(), id: 1 });
        ok(&mut kv, Command::DeleteJob { id: 1 });
        // The name is free again, the id is not reused.
        let Outcome::Job(c) = ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 8 }) else { panic!() };
        assert_eq!(c.id, 3);
        assert_eq!(query::counters(&kv).unwrap().jobs, 2);
        assert_eq!(refused(&mut kv, Command::DeleteJob { id: 1 }), CommandError::JobNotFound { id: 1 });
    }

    #[test]
    fn jobs_need_registered_workers_and_absolute_paths() {
        let mut kv = setup();
        let mut s = spec("a");
        s.target_worker = "ghost".into();
        let e = refused(&mut kv, Command::CreateJob { spec: s, created_unix_ms: 1 });
        assert_eq!(e, CommandError::UnknownWorker { name: "ghost".into() });
        let mut s = spec("a");
        s.source_path = "relative/dir".into();
        assert!(matches!(
            refused(&mut kv, Command::CreateJob { spec: s, created_unix_ms: 1 }),
            CommandError::Invalid { .. }
        ));
        let mut s = spec("a");
        s.target_path = String::new();
        assert!(matches!(
            refused(&mut kv, Command::CreateJob { spec: s, created_unix_ms: 1 }),
            CommandError::Invalid { .. }
        ));
    }

    #[test]
    fn reregistering_updates_without_counting_twice() {
        let mut kv = setup();
        let mut r = reg("src");
        r.cores = 8;
        ok(&mut kv, Command::RegisterWorker(r));
        assert_eq!(query::counters(&kv).unwrap().workers, 2);
        assert_eq!(query::worker(&kv, "src").unwrap().unwrap().cores, 8);
    }

    #[test]
    fn run_state_transitions() {
        let mut kv = setup();
        ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 1 });
        let Outcome::Run(run) = ok(&mut kv, Command::CreateRun { job_id: 1, created_unix_ms: 2, reconcile: false })
        else {
            panic!()
        };
        assert_eq!((run.id, run.state.clone()), (1, RunState::Pending));
        assert_eq!(query::pending_runs(&kv, 10).unwrap().len(), 1);
        assert_eq!(
            refused(&mut kv, Command::CreateRun { job_id: 9, created_unix_ms: 2, reconcile: false }),
            CommandError::JobNotFound { id: 9 }
        );

        ok(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Running), unix_ms: 3 });
        assert!(query::pending_runs(&kv, 10).unwrap().is_empty());
        let e = refused(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Pending), unix_ms: 4 });
        assert!(matches!(e, CommandError::InvalidTransition { .. }));
        let mut wrong = report(RunState::Running);
        wrong.worker = "intruder".into();
        assert!(matches!(
            refused(&mut kv, Command::ReportRun { run_id: 1, report: wrong, unix_ms: 4 }),
            CommandError::WrongWorker { .. }
        ));

        let mut done = report(RunState::Succeeded);
        done.summary = Some(PassSummary { files: 3, ..Default::default() });
        let Outcome::Run(run) = ok(&mut kv, Command::ReportRun { run_id: 1, report: done, unix_ms: 9 }) else {
            panic!()
        };
        assert_eq!(run.finished_unix_ms, Some(9));
        assert_eq!(run.summary.as_ref().map(|s| s.files), Some(3));
        let e = refused(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Running), unix_ms: 10 });
        assert!(matches!(e, CommandError::InvalidTransition { .. }));
        let c = query::counters(&kv).unwrap();
        assert_eq!((c.runs_pending, c.runs_running, c.runs_succeeded), (0, 0, 1));
        assert_eq!(
            refused(&mut kv, Command::ReportRun { run_id: 7, report: report(RunState::Running), unix_ms: 1 }),
            CommandError::RunNotFound { id: 7 }
        );
    }

    #[test]
    fn a_restarted_source_worker_gets_its_running_runs_back_as_pending() {
        let mut kv = setup();
        ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 1 });
        for id in 1..=3 {
            ok(&mut kv, Command::CreateRun { job_id: 1, created_unix_ms: id, reconcile: false });
        }
        ok(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Running), unix_ms: 3 });
        ok(&mut kv, Command::ReportRun { run_id: 2, report: report(RunState::Running), unix_ms: 3 });
        ok(&mut kv, Command::ReportRun { run_id: 2, report: report(RunState::Succeeded), unix_ms: 4 });
        // The target worker restarting changes nothing.
        ok(&mut kv, Command::RegisterWorker(reg("dst")));
        assert_eq!(query::pending_runs(&kv, 10).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![3]);
        // The source restarting requeues what it was running, not what it finished.
        ok(&mut kv, Command::RegisterWorker(reg("src")));
        assert_eq!(query::pending_runs(&kv, 10).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 3]);
        let c = query::counters(&kv).unwrap();
        assert_eq!((c.runs_pending, c.runs_running, c.runs_succeeded), (2, 0, 1));
        // Handed out again, it runs again; a second restart requeues it again.
        ok(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Running), unix_ms: 5 });
        ok(&mut kv, Command::RegisterWorker(reg("src")));
        assert_eq!(query::run(&kv, 1).unwrap().unwrap().state, RunState::Pending);
    }

    #[test]
    fn a_deleted_jobs_run_ended_by_its_worker_is_failed_and_not_requeued() {
        let mut kv = setup();
        ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 1 });
        ok(&mut kv, Command::CreateRun { job_id: 1, created_unix_ms: 2, reconcile: false });
        ok(&mut kv, Command::ReportRun { run_id: 1, report: report(RunState::Running), unix_ms: 3 });
        ok(&mut kv, Command::DeleteJob { id: 1 });
        let stopped = RunState::Failed { error: "job deleted".into() };
        ok(&mut kv, Command::ReportRun { run_id: 1, report: report(stopped.clone()), unix_ms: 4 });
        assert_eq!(query::run(&kv, 1).unwrap().unwrap().state, stopped);
        let c = query::counters(&kv).unwrap();
        assert_eq!((c.runs_pending, c.runs_running, c.runs_failed), (0, 0, 1));
        // The worker restarting gets nothing back.
        ok(&mut kv, Command::RegisterWorker(reg("src")));
        assert!(query::pending_runs(&kv, 10).unwrap().is_empty());
    }

    #[test]
    fn version_batches_count_new_versions_only() {
        let mut kv = setup();
        ok(&mut kv, Command::CreateJob { spec: spec("a"), created_unix_ms: 1 });
        ok(&mut kv, Command::CreateRun { job_id: 1, created_unix_ms: 2, reconcile: false });
        let batch = vec![version("a.txt", 1), version("d/b.txt", 2)];
        let out = ok(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: batch.clone() });
        assert_eq!(out, Outcome::Committed { versions: 2, new_versions: 2 });
        // A retried identical batch adds nothing; a changed file adds one version.
        let out = ok(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: batch });
        assert_eq!(out, Outcome::Committed { versions: 2, new_versions: 0 });
        let out = ok(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: vec![version("a.txt", 5)] });
        assert_eq!(out, Outcome::Committed { versions: 1, new_versions: 1 });
        // The same path twice in one batch counts as two versions.
        let twice = vec![version("e", 1), version("e", 2)];
        assert_eq!(
            ok(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: twice }),
            Outcome::Committed { versions: 2, new_versions: 2 }
        );

        let c = query::counters(&kv).unwrap();
        assert_eq!((c.catalog_files, c.catalog_versions), (3, 5));
        let rows = query::catalog(&kv, 1, "", 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| (r.path.as_str(), r.size)).collect::<Vec<_>>(),
            [("a.txt", 5), ("d/b.txt", 2), ("e", 2)]
        );
        assert_eq!(query::catalog(&kv, 1, "d/", 10).unwrap().len(), 1);
        assert_eq!(query::catalog(&kv, 1, "", 1).unwrap().len(), 1);

        let bad = vec![version("ok", 1), version("../escape", 1)];
        assert!(matches!(
            refused(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: bad }),
            CommandError::InvalidPath { .. }
        ));
        assert!(matches!(
            refused(&mut kv, Command::CommitVersions { run_id: 1, job_id: 2, versions: vec![] }),
            CommandError::RunJobMismatch { .. }
        ));
        let huge = vec![version("x", 1); VERSIONS_PER_BATCH_MAX + 1];
        assert!(matches!(
            refused(&mut kv, Command::CommitVersions { run_id: 1, job_id: 1, versions: huge }),
            CommandError::BatchTooLarge { .. }
        ));
    }

    #[test]
    fn commands_round_trip_through_json() {
        let cmd = Command::CreateRun { job_id: 4, created_unix_ms: 5, reconcile: false };
        let text = serde_json::to_string(&cmd).unwrap();
        assert_eq!(text, r#"{"cmd":"create_run","job_id":4,"created_unix_ms":5}"#);
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), cmd);
        let reconcile = Command::CreateRun { job_id: 4, created_unix_ms: 5, reconcile: true };
        let text = serde_json::to_string(&reconcile).unwrap();
        assert_eq!(text, r#"{"cmd":"create_run","job_id":4,"created_unix_ms":5,"reconcile":true}"#);
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), reconcile);
        let reg = Command::RegisterWorker(reg("w"));
        assert_eq!(serde_json::from_str::<Command>(&serde_json::to_string(&reg).unwrap()).unwrap(), reg);
    }
}
