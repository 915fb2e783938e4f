//! Tables for people, JSON for scripts.

use std::io::IsTerminal;
use std::time::Duration;

use xtsync_api::{PassSummary, Run, RunState};

/// Prints rows as an aligned table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| h.to_uppercase()).collect());
    for row in rows {
        line(row.clone());
    }
}

pub fn state_name(s: &RunState) -> String {
    match s {
        RunState::Pending => "pending".into(),
        RunState::Running => "running".into(),
        RunState::Succeeded => "succeeded".into(),
        RunState::Failed { error } => format!("failed: {error}"),
    }
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn print_summary(s: &PassSummary) {
    table(
        &[
            "files",
            "transferred",
            "unchanged",
            "scanned",
            "on wire",
            "chunks sent",
            "chunks reused",
            "deleted",
            "seconds",
        ],
        &[vec![
            s.files.to_string(),
            s.files_transferred.to_string(),
            s.files_unchanged.to_string(),
            bytes(s.bytes_scanned),
            bytes(s.bytes_on_wire),
            s.chunks_sent.to_string(),
            s.chunks_reused.to_string(),
            s.entries_deleted.to_string(),
            format!("{:.2}", s.duration_s),
        ]],
    );
}

/// Waits for a run to finish, with a progress bar when stdout is a terminal.
pub async fn wait_for_run(client: &crate::client::Client, run_id: u64, quiet: bool) -> anyhow::Result<Run> {
    let bar = (!quiet && std::io::stdout().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new_spinner();
        b.enable_steady_tick(Duration::from_millis(120));
        b
    });
    let started = std::time::Instant::now();
    loop {
        let run = client.run(run_id).await?;
        if let Some(b) = &bar {
            b.set_message(format!(
                "run {run_id}: {} — {} files done, {} on wire",
                state_name(&run.state),
                run.progress.files_done,
                bytes(run.progress.bytes_on_wire)
            ));
        }
        if run.state.is_finished() {
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            return Ok(run);
        }
        // Short passes (an unchanged tree takes a fraction of a second) are seen to end
        // at once; long ones are asked about less often.
        let poll_ms = if started.elapsed() < Duration::from_secs(2) { 10 } else { 50 };
        tokio::time::sleep(Duration::from_millis(poll_ms)).await;
    }
}
