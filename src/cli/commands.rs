//! The command-line commands (docs/behaviour.md §9), as library functions `main` calls.

use std::path::Path;
use std::process::ExitCode;

use crate::{Config, Server, Sink, SinkOptions, StartError, agora_sign};

/// `callback-sim serve`: the REST API and dispatcher until SIGINT/SIGTERM.
pub async fn serve(config_path: &Path) -> ExitCode {
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    let links: Vec<String> = config
        .apps()
        .iter()
        .map(|app| console_fragment(app.id().as_str(), app.token().expose()))
        .collect();
    let server = match Server::start(config).await {
        Ok(s) => s,
        // A rule's ca_file / client_cert / client_key that exists but cannot be used is a
        // config error like any other.
        Err(StartError::TlsFiles(e)) => {
            eprintln!("error: invalid config: {}: {e}", config_path.display());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = shutdown_signal();
    // The address, then the console signed in, for each app: the token is in the fragment,
    // which the browser never sends (docs/behaviour.md §12). Printed for the person who
    // started it, never logged; in one write, and a reader that stops after the address
    // line (a closed pipe) does not stop the server.
    let mut started = format!("callback-sim listening on {}\n", server.base_url());
    for fragment in &links {
        started.push_str(&format!("console: {}/console{fragment}\n", server.base_url()));
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(started.as_bytes()).and_then(|()| out.flush());
    }
    tracing::info!(addr = %server.addr(), "serving");
    stop.await;
    tracing::info!("stopping: new messages get 503, attempts in flight get at most 5 s, queued callbacks are stored");
    server.shutdown().await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// `#app=ID&token=T`, each percent-encoded: what signs the console in.
fn console_fragment(app: &str, token: &str) -> String {
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!("#app={}&token={}", enc(app), enc(token))
}

/// `callback-sim sign`: the agora signature, for people writing their verifier.
pub fn sign(call_id: &str, secret: &str, timestamp: u64) -> ExitCode {
    println!("{}", agora_sign(call_id, secret, timestamp));
    ExitCode::SUCCESS
}

/// `callback-sim sink`: a receiver until Ctrl-C, then a summary.
pub async fn sink(opts: SinkOptions) -> ExitCode {
    if let Some(rate) = opts.fail_rate
        && !(0.0..=1.0).contains(&rate)
    {
        eprintln!("error: --fail-rate must be between 0 and 1, got {rate}");
        return ExitCode::from(2);
    }
    if let Some(s) = opts.status
        && !(100..=999).contains(&s)
    {
        eprintln!("error: --status must be an HTTP status code (100-999), got {s}");
        return ExitCode::from(2);
    }
    if let Some(tls) = &opts.tls
        && let Err(e) = tls.server_config()
    {
        let flag = if tls.client_ca.as_ref() == Some(&e.path) {
            "--client-ca"
        } else if tls.key == e.path {
            "--tls-key"
        } else {
            "--tls-cert"
        };
        eprintln!("error: cannot serve HTTPS: {flag} {e}");
        return ExitCode::from(2);
    }
    let sink = match Sink::start(opts).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot start the sink: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = shutdown_signal();
    println!("sink listening on {}", sink.base_url());
    stop.await;
    let summary = sink.stop().await;
    println!("sink summary: {summary}");
    ExitCode::SUCCESS
}

/// Listens for Ctrl-C and SIGTERM from now on; the future resolves at the first of them.
/// Called before the address is printed, so that a stop asked for as soon as it is read is
/// still a graceful one (before, a SIGTERM in between killed the process).
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let (int, term) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        let recv = |s: std::io::Result<Signal>| async move {
            match s {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                _ = recv(int) => {},
                _ = recv(term) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
