//! The `callback-sim` command line: parse, set up logging, call the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use callback_sim::commands;
use callback_sim::domain::Dialect;
use callback_sim::logging::{self, LogFormat};
use callback_sim::sink::{SinkOptions, SinkTls};
use clap::{Parser, Subcommand};

/// glibc's malloc serialises on arena locks under many threads; mimalloc does not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "callback-sim",
    version,
    about = "Plays the sending side of an IM provider's callback (webhook) system"
)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job on the embedded default: sinks, traffic, a ban, the store, a replay (~10 s).
    Demo,
    /// Run the REST API and the dispatcher until SIGINT/SIGTERM.
    Serve {
        /// The config file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
    /// Print the agora signature MD5(callId + secret + timestamp).
    Sign {
        #[arg(long)]
        call_id: String,
        #[arg(long)]
        secret: String,
        /// Unix time in milliseconds, as in the callback's `timestamp`.
        #[arg(long)]
        timestamp: u64,
    },
    /// A receiver that verifies signatures, counts callbacks and injects faults.
    Sink {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Wire format of the callbacks it receives.
        #[arg(long, default_value = "agora", value_parser = parse_dialect)]
        dialect: Dialect,
        /// Verify agora signatures with this secret.
        #[arg(long)]
        secret: Option<String>,
        /// Fraction (0..1) of callbacks answered with --status (default 500).
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        /// Status of injected failures; without --fail-rate, every callback gets it.
        #[arg(long)]
        status: Option<u16>,
        /// Wait this many milliseconds before answering.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Answer a body of this many characters (over 1000 is a violation).
        #[arg(long, default_value_t = 0)]
        body_chars: usize,
        /// Do not print each callback.
        #[arg(long)]
        quiet: bool,
        /// Serve HTTPS with this certificate (PEM, the sink's own first, then its chain).
        #[arg(long, value_name = "PATH", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key of --tls-cert (PEM).
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Mutual TLS: require a client certificate signed by this CA (PEM); needs --tls-cert.
        #[arg(long, value_name = "PATH", requires = "tls_cert")]
        client_ca: Option<PathBuf>,
    },
}

fn parse_dialect(s: &str) -> Result<Dialect, String> {
    Dialect::parse(s).map_err(|e| e.0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates on stdout; its log shows only problems unless RUST_LOG says otherwise.
    let default_level = if matches!(cli.command, Command::Demo) {
        "error"
    } else {
        "info"
    };
    logging::init(cli.log_format, default_level);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        match cli.command {
            Command::Demo => callback_sim::demo::run().await,
            Command::Serve { config } => commands::serve(&config).await,
            Command::Sign {
                call_id,
                secret,
                timestamp,
            } => commands::sign(&call_id, &secret, timestamp),
            Command::Sink {
                listen,
                dialect,
                secret,
                fail_rate,
                status,
                delay_ms,
                body_chars,
                quiet,
                tls_cert,
                tls_key,
                client_ca,
            } => {
                let tls = tls_cert
                    .zip(tls_key)
                    .map(|(cert, key)| SinkTls { cert, key, client_ca });
                let opts = SinkOptions {
                    listen,
                    dialect,
                    secret,
                    fail_rate,
                    status,
                    delay: Duration::from_millis(delay_ms),
                    body_chars,
                    print: !quiet,
                    tls,
                };
                commands::sink(opts).await
            }
        }
    })
}
