//! The `callback-sim` command line (docs/behaviour.md §9): [`main`] parses the arguments, sets up logging
//! and runs one command on the library's public types — `serve` on [`Server`](crate::Server),
//! `sink` on [`Sink`](crate::Sink), `demo` on both, `sign` on [`agora_sign`](crate::agora_sign) —
//! so that the binary and a Rust test go through the same API. `generate` runs the in-process
//! traffic generator.
//!
//! The binary's `main` is one line: `callback_sim::cli::main()`.

mod check;
mod commands;
mod conform;
mod demo;
mod logging;
mod trigger;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Parser, Subcommand};

use self::logging::LogFormat;
use crate::domain::Dialect;
use crate::generate::{self, EventMix, GenerateOptions, Mix, parse_weights};
use crate::sink::{SinkOptions, SinkTls};

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
    /// The main job, narrated (~10 s): sinks, traffic, a ban, the store, a replay. Uses
    /// ./config.toml when there is one (its first app, in a temp data dir, with short bans),
    /// else the copy built into the binary.
    Demo,
    /// Run the REST API and the dispatcher until SIGINT/SIGTERM.
    Serve {
        /// The config file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// Only check the config and print what it would run (exit 0, or 2 if it is invalid),
        /// without opening a port or the store.
        #[arg(long)]
        check: bool,
    },
    /// Print the event catalog: every event, its REST fields, and how each provider sends it.
    Catalog {
        /// Only the events of this provider.
        #[arg(long, value_parser = parse_dialect)]
        dialect: Option<Dialect>,
        /// The `GET /catalog` JSON, example bodies included.
        #[arg(long)]
        json: bool,
    },
    /// Send one catalog event (or `message`) to a running `serve` and print the answer.
    Trigger(Box<trigger::TriggerArgs>),
    /// Check a receiver against the provider's rules (status, time, size, every message type,
    /// retries, bursts, signatures, pre-send answers); exit 1 when a check fails.
    Check(Box<conform::CheckArgs>),
    /// Work with config files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Realistic traffic at a fixed rate, with a live view and a latency report.
    #[command(group(ArgGroup::new("budget").args(["duration", "count"]).required(true).multiple(true)))]
    Generate {
        /// The config file (apps, rules, delivery settings).
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
        /// The app whose rules (and dialect) get the traffic.
        #[arg(long)]
        app: String,
        /// Messages (and events) per second; 0 = as fast as the pipeline takes them.
        #[arg(long)]
        rate: u32,
        /// Stop after this many seconds.
        #[arg(long)]
        duration: Option<f64>,
        /// Stop after this many messages and events (at least 1).
        #[arg(long, value_parser = at_least_one::<u64>)]
        count: Option<u64>,
        /// Seed of the traffic and of the callIds (random when absent; the report shows it).
        #[arg(long)]
        seed: Option<u64>,
        /// Write the report as JSON here (checked before the run).
        #[arg(long)]
        report: Option<PathBuf>,
        /// The in-process simulator's store (default: a temp dir, removed at the end).
        #[arg(long, value_name = "DIR", conflicts_with = "server")]
        data_dir: Option<PathBuf>,
        /// Write accepted callbacks to disk before taking the next message (delivery.durable;
        /// off in generate unless given).
        #[arg(long, conflicts_with = "server")]
        durable: bool,
        /// Chance that a recipient is offline (one chat_offline callback each).
        #[arg(long, default_value_t = 0.2)]
        offline_ratio: f64,
        /// Weights of the chat types.
        #[arg(long, default_value = "chat=60,groupchat=30,chatroom=10")]
        chat_types: String,
        /// Weights of the message types.
        #[arg(long, default_value = "txt=70,img=10,audio=5,video=3,file=3,loc=3,cmd=3,custom=3")]
        message_types: String,
        /// Members per group.
        #[arg(long, default_value_t = 8)]
        group_size: usize,
        /// Distinct users.
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Chance that a message was sent through the REST API (source = rest).
        #[arg(long, default_value_t = 0.1)]
        rest_ratio: f64,
        /// Weights of messages and catalog events, e.g. message=80,message_recalled=10,user_status=10
        /// (default: messages only; `callback-sim catalog` lists the events).
        #[arg(long, value_name = "NAME=WEIGHT,...")]
        event_mix: Option<String>,
        /// Drive a running `serve` at this base URL over REST instead of in-process.
        #[arg(long)]
        server: Option<String>,
        /// The app's token, with --server.
        #[arg(long, requires = "server")]
        token: Option<String>,
        /// REST requests in flight at once, with --server (default 64).
        #[arg(long, requires = "server", value_parser = at_least_one::<usize>)]
        connections: Option<usize>,
    },
    /// Print a signature: agora's MD5(callId + secret + timestamp), or with --dialect tencent
    /// the URL's Sign = SHA-256(token + RequestTime).
    Sign {
        /// Whose signature.
        #[arg(long, default_value = "agora", value_parser = parse_dialect)]
        dialect: Dialect,
        /// Agora: the callback's `callId`, e.g. demo#e7b1c1d2-5a0f-4a34-9c1e-0f6b2f7a9a11.
        #[arg(long)]
        call_id: Option<String>,
        /// Agora: the rule's signing secret (`secret` in config.toml).
        #[arg(long)]
        secret: Option<String>,
        /// Agora: Unix time in milliseconds, as in the callback's `timestamp`.
        #[arg(long)]
        timestamp: Option<u64>,
        /// Tencent: the app's webhook token (`tencent_token` in config.toml).
        #[arg(long)]
        token: Option<String>,
        /// Tencent: the URL's `RequestTime`, Unix seconds.
        #[arg(long)]
        request_time: Option<u64>,
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
        #[arg(long, conflicts_with = "token")]
        secret: Option<String>,
        /// Verify tencent URL signatures (Sign, RequestTime) with this token.
        #[arg(long)]
        token: Option<String>,
        /// Fraction (0..1) of callbacks answered with --status (default 500); 0 fails none.
        #[arg(long)]
        fail_rate: Option<f64>,
        /// Status of injected failures; without --fail-rate, every callback gets it.
        #[arg(long)]
        status: Option<u16>,
        /// Wait this many milliseconds before answering.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Answer a body of this many characters (over 1000 is a violation; long ones are streamed).
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check a config and print what it would run (exit 0, or 2 if it is invalid), without
    /// opening a port or the store: the same as `serve --check`.
    Check {
        /// The config file.
        #[arg(long, default_value = "config.toml")]
        config: PathBuf,
    },
}

/// `generate --connections` when not given: REST requests in flight at once with `--server`.
const DEFAULT_CONNECTIONS: usize = 64;

/// A whole number of at least 1 (`generate --count`, `--connections`).
fn at_least_one<T: std::str::FromStr + PartialEq + From<u8>>(s: &str) -> Result<T, String> {
    match s.parse::<T>() {
        Ok(n) if n == T::from(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number of at least 1".into()),
    }
}

fn parse_dialect(s: &str) -> Result<Dialect, String> {
    Dialect::parse(s).map_err(|e| e.0)
}

/// Runs the `callback-sim` command line on the process's arguments and returns its exit status:
/// 0 on success, 2 for invalid arguments or config (before any port is opened), 1 otherwise.
///
/// It builds its own multi-threaded tokio runtime, so call it outside of one.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo narrates and the generator shows a live view on stdout: their log shows only
    // problems unless RUST_LOG says otherwise.
    let default_level = match cli.command {
        Command::Demo => "error",
        Command::Generate { .. } => "warn",
        _ => "info",
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
            Command::Demo => demo::run().await,
            Command::Generate {
                config,
                app,
                rate,
                duration,
                count,
                seed,
                report,
                data_dir,
                durable,
                offline_ratio,
                chat_types,
                message_types,
                group_size,
                users,
                rest_ratio,
                event_mix,
                server,
                token,
                connections,
            } => {
                let mix = (|| -> Result<Mix, String> {
                    for (name, v) in [("--offline-ratio", offline_ratio), ("--rest-ratio", rest_ratio)] {
                        if !(0.0..=1.0).contains(&v) {
                            return Err(format!("{name} must be between 0 and 1, got {v}"));
                        }
                    }
                    if group_size < 2 || users < 2 {
                        return Err("--group-size and --users must be at least 2".into());
                    }
                    Ok(Mix {
                        chat_types: parse_weights(&chat_types, ["chat", "groupchat", "chatroom"])
                            .map_err(|e| format!("--chat-types: {e}"))?,
                        message_types: parse_weights(
                            &message_types,
                            ["txt", "img", "audio", "video", "file", "loc", "cmd", "custom"],
                        )
                        .map_err(|e| format!("--message-types: {e}"))?,
                        offline_ratio,
                        group_size,
                        users,
                        rest_ratio,
                        events: match event_mix {
                            Some(text) => EventMix::parse(&text).map_err(|e| format!("--event-mix: {e}"))?,
                            None => EventMix::default(),
                        },
                    })
                })();
                let duration = match duration.map(|d| Duration::try_from_secs_f64(d).ok().filter(|d| !d.is_zero())) {
                    Some(None) => {
                        eprintln!("error: --duration must be a positive number of seconds");
                        return ExitCode::from(2);
                    }
                    other => other.flatten(),
                };
                match mix {
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::from(2)
                    }
                    Ok(mix) => {
                        let opts = GenerateOptions {
                            config,
                            app,
                            rate,
                            duration,
                            count,
                            seed: seed.unwrap_or_else(rand::random),
                            report,
                            mix,
                            data_dir,
                            durable,
                            server,
                            token,
                            connections: connections.unwrap_or(DEFAULT_CONNECTIONS),
                        };
                        match generate::run(opts).await {
                            Ok(_) => ExitCode::SUCCESS,
                            Err(e) => {
                                eprintln!("error: {e}");
                                ExitCode::from(e.exit_code())
                            }
                        }
                    }
                }
            }
            Command::Serve { config, check: true } => check::check(&config),
            Command::Serve { config, check: false } => commands::serve(&config).await,
            Command::Config {
                command: ConfigCommand::Check { config },
            } => check::check(&config),
            Command::Check(args) => conform::run(*args).await,
            Command::Catalog { dialect, json } => trigger::catalog_command(dialect, json),
            Command::Trigger(args) => trigger::run(*args).await,
            Command::Sign {
                dialect,
                call_id,
                secret,
                timestamp,
                token,
                request_time,
            } => match (dialect, call_id, secret, timestamp, token, request_time) {
                (Dialect::Agora, Some(call_id), Some(secret), Some(timestamp), None, None) => {
                    commands::sign(&call_id, &secret, timestamp)
                }
                (Dialect::Tencent, None, None, None, Some(token), Some(t)) => {
                    println!("{}", crate::tencent_sign(&token, t));
                    ExitCode::SUCCESS
                }
                (Dialect::Agora, ..) => {
                    eprintln!("error: agora signatures take --call-id, --secret and --timestamp (and no --token or --request-time)");
                    ExitCode::from(2)
                }
                (Dialect::Tencent, ..) => {
                    eprintln!("error: tencent signatures take --token and --request-time (and no --call-id, --secret or --timestamp)");
                    ExitCode::from(2)
                }
            },
            Command::Sink {
                listen,
                dialect,
                secret,
                token,
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
                    // The sink checks with one key: agora's secret or tencent's token.
                    secret: secret.or(token),
                    fail_rate,
                    status,
                    delay: Duration::from_millis(delay_ms),
                    body_chars,
                    print: !quiet,
                    tls,
                    record: false,
                };
                commands::sink(opts).await
            }
        }
    })
}
