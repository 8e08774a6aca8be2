//! `callback-sim generate`: realistic traffic at a fixed rate, through the same pipeline as
//! REST ingestion (in-process), or over REST against a running `serve` (`--server`).
//!
//! `traffic.rs` is the pure, seeded model of the simulated IM world; [`run`] paces it with
//! `governor` (`pacing.rs`), watches every callback's final outcome and latency, shows a live
//! view, and ends with a table (and `--report` JSON) of outcomes and latency percentiles
//! (`report.rs`).

mod mix;
mod pacing;
mod report;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use mix::EventMix;
pub use report::Report;
pub use traffic::{Mix, parse_weights};

use report::{ReportFile, Tally};

/// What `generate` was asked to do.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// `--config`: the config file (in-process mode builds the simulator from it).
    pub config: PathBuf,
    /// `--app`: the id of the app whose rules get the traffic.
    pub app: String,
    /// `--rate`: messages per second; 0 = as fast as the pipeline takes them.
    pub rate: u32,
    /// `--duration`: stop sending after this long; with `count`, whichever comes first.
    pub duration: Option<Duration>,
    /// `--count`: stop after this many messages (at least 1); with `duration`, whichever
    /// comes first.
    pub count: Option<u64>,
    /// `--seed`: the seed of the traffic and of the callIds (random when not given); printed
    /// at the start and shown in the report.
    pub seed: u64,
    /// `--report`: where to write the [`Report`] as JSON (checked before the run).
    pub report: Option<PathBuf>,
    /// The traffic mix (`--chat-types`, `--message-types`, ... on the command line).
    pub mix: Mix,
    /// `--data-dir`: the in-process simulator's store (a fresh temp dir, removed at the end,
    /// when not given); never the config's `server.data_dir`, which a `serve` may hold.
    pub data_dir: Option<PathBuf>,
    /// `--durable`: the in-process simulator writes accepted callbacks to disk before the next
    /// message (`delivery.durable`, which `generate` turns off unless asked).
    pub durable: bool,
    /// `--server`: the base URL of a running `serve` to drive over REST instead of in-process.
    pub server: Option<String>,
    /// `--token`: the app's Bearer token; required with `server`, refused without.
    pub token: Option<String>,
    /// `--connections`: REST requests in flight at once in `--server` mode.
    pub connections: usize,
}

/// Why a run could not happen, or failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Invalid options or config, found before anything was sent (`generate` exits 2).
    #[error("{0}")]
    Usage(String),
    /// The run itself failed (`generate` exits 1).
    #[error("{0}")]
    Run(String),
}

impl GenerateError {
    /// The exit status of `generate` for this error (docs/behaviour.md §9).
    pub fn exit_code(&self) -> u8 {
        match self {
            GenerateError::Usage(_) => 2,
            GenerateError::Run(_) => 1,
        }
    }
}

/// Checks what can be checked before the run: a budget, a token exactly with `--server`, no
/// `--data-dir` with it.
fn check(opts: &GenerateOptions) -> Result<(), GenerateError> {
    let usage = |s: &str| Err(GenerateError::Usage(s.into()));
    if opts.count.is_none() && opts.duration.is_none() {
        return usage("give --count N or --duration S (or both: whichever comes first)");
    }
    if opts.count == Some(0) {
        return usage("--count must be at least 1");
    }
    match (&opts.server, &opts.token) {
        (Some(_), None) => usage("--server needs --token"),
        (None, Some(_)) => usage("--token is only for --server"),
        (Some(_), _) if opts.data_dir.is_some() => usage("--data-dir is only for in-process runs (without --server)"),
        _ => Ok(()),
    }
}

/// Runs the generator; prints the seed, the live view and the final table; returns the report.
pub async fn run(opts: GenerateOptions) -> Result<Report, GenerateError> {
    check(&opts)?;
    // An unwritable report path is refused now, not after the run.
    let report_file = opts.report.as_deref().map(ReportFile::open).transpose()?;
    println!("seed {0} (--seed {0} repeats this run)", opts.seed);
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let result = match &opts.server {
        // On a worker thread of the runtime, like the deliveries it starts: waking them from
        // there takes no trip through the scheduler's global queue.
        None => {
            let (opts, tally) = (opts.clone(), tally.clone());
            tokio::spawn(async move { pacing::run_in_process(&opts, tally).await })
                .await
                .map_err(|e| GenerateError::Run(format!("the generator failed: {e}")))
                .and_then(|r| r)
                .map(|sent| (sent, "in-process"))
        }
        Some(server) => pacing::run_rest(&opts, server, tally.clone())
            .await
            .map(|sent| (sent, "rest")),
    };
    let (sent, mode) = match result {
        Ok(r) => r,
        Err(e) => {
            if let Some(f) = report_file {
                f.abandon();
            }
            return Err(e);
        }
    };
    let report = Report::new(&opts, mode, sent, &tally, started);
    report.print_table();
    if let Some(f) = report_file {
        f.write(&report)?;
    }
    Ok(report)
}
