//! Logging setup: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text or JSON.
//! Stdout is kept for what commands print for people and scripts (addresses, summaries).
//! Text is coloured only on a terminal (and not with `NO_COLOR` set), so that a log piped to a
//! file or another program has no escape codes in it.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (`default_level` unless `RUST_LOG` is set); a second call
/// is a no-op.
pub fn init(format: LogFormat, default_level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether text logs are coloured: on a terminal, unless `NO_COLOR` is set to something
/// (<https://no-color.org>).
fn colours(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(!colours(false, None), "a pipe or a file gets no escape codes");
        assert!(!colours(true, Some("1".into())));
        assert!(colours(true, Some("".into())), "an empty NO_COLOR does not count");
    }
}
