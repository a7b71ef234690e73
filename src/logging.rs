//! Diagnostics: `tracing` output to stderr (and a log file when asked), never
//! stdout — stdout belongs to ACP in the IDE bridge. Owns the choice of filter
//! and destinations; what gets logged is up to each module.

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// Install the global subscriber: stderr, and `log_file` too when given.
///
/// `--log-level` wins over `RUST_LOG`. A bare level (`debug`) applies to Punie
/// itself while its dependencies stay at `warn`; a full filter directive
/// (`punie=debug,agent_client_protocol=trace`) is used as written.
pub fn init(log_level: Option<&str>, log_file: Option<&Path>) -> anyhow::Result<()> {
    let filter = match log_level {
        Some(level) => EnvFilter::try_new(directive_for(level))?,
        None => match std::env::var("RUST_LOG") {
            Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value)?,
            _ => EnvFilter::try_new(directive_for(DEFAULT_LEVEL))?,
        },
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    let file = log_file
        .map(|path| -> anyhow::Result<_> {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open the log file {}", path.display()))?;
            Ok(tracing_subscriber::fmt::layer()
                .with_writer(Mutex::new(file))
                .with_ansi(false)
                .with_target(false))
        })
        .transpose()?;
    tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

fn directive_for(level: &str) -> String {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let level = level.trim();
    if level.eq_ignore_ascii_case("off") {
        "off".to_owned()
    } else if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        format!("warn,punie={level}")
    } else {
        level.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_applies_to_punie_and_keeps_dependencies_quiet() {
        assert_eq!(directive_for("debug"), "warn,punie=debug");
        assert_eq!(directive_for("TRACE"), "warn,punie=TRACE");
    }

    #[test]
    fn a_full_directive_is_used_as_written() {
        assert_eq!(
            directive_for("punie=debug,agent_client_protocol=trace"),
            "punie=debug,agent_client_protocol=trace"
        );
    }
}
