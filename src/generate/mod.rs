//! `callback-sim generate`: realistic traffic at a fixed rate, through the same pipeline as
//! REST ingestion (in-process), or over REST against a running `serve` (`--server`).
//!
//! `traffic.rs` is the pure, seeded model of the simulated IM world; [`run`] paces it with
//! `governor` (`pacing.rs`), watches every callback's final outcome and latency, shows a live
//! view, and ends with a table (and `--report` JSON) of outcomes and latency percentiles
//! (`report.rs`).

mod pacing;
mod report;
mod traffic;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use report::Report;
pub use traffic::{Mix, parse_weights};

use report::Tally;

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
    /// `--count`: stop after this many messages; with `duration`, whichever comes first.
    pub count: Option<u64>,
    /// `--seed`: the seed of the traffic and of the callIds (random when not given); shown in
    /// the report.
    pub seed: u64,
    /// `--report`: where to write the [`Report`] as JSON.
    pub report: Option<PathBuf>,
    /// The traffic mix (`--chat-types`, `--message-types`, ... on the command line).
    pub mix: Mix,
    /// `--server`: the base URL of a running `serve` to drive over REST instead of in-process.
    pub server: Option<String>,
    /// `--token`: the app's Bearer token; required with `server`.
    pub token: Option<String>,
    /// `--connections`: REST requests in flight at once in `--server` mode.
    pub connections: usize,
}

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct GenerateError(pub String);

/// Runs the generator; prints the live view and the final table; returns the report.
pub async fn run(opts: GenerateOptions) -> Result<Report, GenerateError> {
    if opts.count.is_none() && opts.duration.is_none() {
        return Err(GenerateError(
            "give --count N or --duration S (or both: whichever comes first)".into(),
        ));
    }
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let (sent, mode) = match &opts.server {
        // On a worker thread of the runtime, like the deliveries it starts: waking them from
        // there takes no trip through the scheduler's global queue.
        None => {
            let (opts, tally) = (opts.clone(), tally.clone());
            let sent = tokio::spawn(async move { pacing::run_in_process(&opts, tally).await })
                .await
                .map_err(|e| GenerateError(format!("the generator failed: {e}")))??;
            (sent, "in-process")
        }
        Some(server) => (pacing::run_rest(&opts, server, tally.clone()).await?, "rest"),
    };
    let report = Report::new(&opts, mode, sent, &tally, started);
    report.print_table();
    if let Some(path) = &opts.report {
        report.write(path)?;
        println!("report written to {}", path.display());
    }
    Ok(report)
}
