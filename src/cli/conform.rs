//! `callback-sim check` (docs/behaviour.md §9): the receiver conformance check, against a URL
//! or the rules of a config, printed as a table, JSON or JUnit XML.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::check::{self, CheckRun, CheckTarget, Grade, report};
use crate::config::Config;
use crate::domain::{CallbackUrl, Dialect, RuleKind};

/// How the result is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    /// A table for people.
    Text,
    /// One JSON object (an array of them for several rules).
    Json,
    /// JUnit XML, one testcase per check.
    Junit,
}

/// The arguments of `callback-sim check`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").args(["url", "config"]).required(true)))]
pub struct CheckArgs {
    /// The receiver's URL.
    #[arg(long, conflicts_with_all = ["config", "app", "rule"])]
    url: Option<String>,
    /// Wire format of the callbacks (with --url).
    #[arg(long, default_value = "agora", value_parser = super::parse_dialect)]
    dialect: Dialect,
    /// post_send (notifications) or pre_send (verdicts), with --url.
    #[arg(long, default_value = "post_send", value_parser = parse_kind)]
    kind: RuleKind,
    /// The agora signing secret the receiver verifies (enables bad_signature).
    #[arg(long)]
    secret: Option<String>,
    /// The tencent callback token the receiver is given.
    #[arg(long)]
    token: Option<String>,
    /// How long one answer may take, in ms (default: the provider's: agora 60000, tencent
    /// 2000; pre-send 200 / 2000; with --config the rule's).
    #[arg(long, value_parser = super::at_least_one::<u64>)]
    timeout_ms: Option<u64>,
    /// Check the rules of this config (with --app).
    #[arg(long, requires = "app")]
    config: Option<PathBuf>,
    /// The app of --config whose rules are checked.
    #[arg(long, requires = "config")]
    app: Option<String>,
    /// Only this rule of the app.
    #[arg(long, requires = "app")]
    rule: Option<String>,
    /// text, json or junit.
    #[arg(long, value_enum, default_value_t = CheckFormat::Text)]
    format: CheckFormat,
    /// Write the result here instead of stdout.
    #[arg(long)]
    output: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<RuleKind, String> {
    RuleKind::parse(s).map_err(|e| e.0)
}

/// The targets the arguments name, or what is wrong with them.
fn targets(args: &CheckArgs) -> Result<Vec<CheckTarget>, String> {
    let timeout = args.timeout_ms.map(Duration::from_millis);
    if let Some(url) = &args.url {
        let url = CallbackUrl::parse(url).map_err(|e| format!("--url: {}", e.0))?;
        let mut t = CheckTarget::new(url, args.dialect, args.kind);
        t.secret = args.secret.clone().unwrap_or_default();
        t.token = args.token.clone();
        if let Some(d) = timeout {
            t.timeout = d;
        }
        return Ok(vec![t]);
    }
    let (Some(path), Some(app_id)) = (&args.config, &args.app) else {
        return Err("give --url, or --config with --app".into());
    };
    let config = Config::load(path).map_err(|e| format!("invalid config: {e}"))?;
    let app = config
        .apps()
        .iter()
        .find(|a| a.id().as_str() == app_id)
        .ok_or_else(|| format!("--app: no app {app_id:?} in {}", path.display()))?;
    let rules: Vec<_> = match &args.rule {
        Some(name) => vec![
            app.rule(name)
                .ok_or_else(|| format!("--rule: app {app_id:?} has no rule {name:?}"))?,
        ],
        None => app.rules().iter().collect(),
    };
    if rules.is_empty() {
        return Err(format!("app {app_id:?} has no rules to check"));
    }
    Ok(rules
        .into_iter()
        .map(|r| {
            let mut t = CheckTarget::new(r.url().clone(), app.dialect(), r.kind());
            t.secret = r.secret().expose().to_string();
            t.token = args.token.clone();
            t.app = app.id().clone();
            t.sdk_app_id = app.sdk_app_id();
            t.tls = r.tls().clone();
            t.timeout = timeout.unwrap_or(match r.kind() {
                RuleKind::PreSend => r.pre_send().timeout(),
                RuleKind::PostSend => app.policy().timeout(),
            });
            t
        })
        .collect())
}

/// Runs `callback-sim check`: 0 when nothing failed, 1 when a check failed, 2 when the
/// command itself was wrong.
pub async fn run(args: CheckArgs) -> ExitCode {
    let targets = match targets(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Checked before anything is sent: a CI job learns of a bad path at once.
    let mut file = match &args.output {
        Some(path) => match std::fs::File::create(path) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("error: --output {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    let terminal = std::io::stderr().is_terminal();
    let mut runs: Vec<CheckRun> = Vec::with_capacity(targets.len());
    for target in &targets {
        let progress = |name: &str| {
            if terminal {
                eprint!("\r\x1b[2Kchecking {} … {name}", target.url);
            }
        };
        match check::run(target, &progress).await {
            Ok(r) => runs.push(r),
            Err(e) => {
                if terminal {
                    eprintln!();
                }
                eprintln!("error: {}: {e}", target.url);
                return ExitCode::from(2);
            }
        }
    }
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let out = match args.format {
        CheckFormat::Text => report::text(&runs),
        CheckFormat::Json => report::json(&runs),
        CheckFormat::Junit => report::junit(&runs),
    };
    let written = match &mut file {
        Some(f) => std::io::Write::write_all(f, out.as_bytes()),
        None => std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("error: cannot write the result: {e}");
        return ExitCode::from(1);
    }
    for run in &runs {
        if let Some(c) = run
            .checks
            .iter()
            .find(|c| c.name == "reachable" && c.result == Grade::Fail)
        {
            eprintln!("error: {} is unreachable: {}", run.target.url, c.detail);
        }
    }
    if runs.iter().any(|r| r.count(Grade::Fail) > 0) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
