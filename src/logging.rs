//! Diagnostics: `tracing` output to stderr (and a log file when asked), never
//! stdout — stdout belongs to ACP in the IDE bridge. Owns the choice of filter
//! and destinations; what gets logged is up to each module.

/// A line for the person on stderr, like `eprintln!`, but one that cannot
/// be written — stderr closed, a full disk, a reader gone — is dropped
/// rather than taking the process down: no message is worth a crash.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

use std::io::IsTerminal as _;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The filter used when neither `--log-level` nor `RUST_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// The levels a bare `--log-level` may name.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// A `--log-level` (or `log-level` setting) that is not a filter.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{value}` is not a log filter: {why}. Give a level (off, error, warn, info, debug, trace) or directives such as punie=debug,tower=warn"
)]
pub struct FilterError {
    value: String,
    why: String,
}

/// Where the filter comes from, strongest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Levels<'a> {
    /// `--log-level`.
    pub flag: Option<&'a str>,
    /// `log-level` in the settings file; `RUST_LOG` wins over it.
    pub configured: Option<&'a str>,
}

/// Install the global subscriber: stderr, and `log_file` too when given.
///
/// `--log-level` wins over `RUST_LOG`, which wins over the settings file. A
/// bare level (`debug`) applies to Punie itself while its dependencies stay
/// at `warn`; a full filter directive (`punie=debug,agent_client_protocol=trace`)
/// is used as written. A malformed `--log-level` is an error; a malformed
/// `RUST_LOG`, which may have been set for another program, is reported and
/// the default used instead.
pub fn init(levels: Levels<'_>, log_file: Option<&Path>) -> anyhow::Result<()> {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = match (levels.flag, rust_log, levels.configured) {
        (Some(level), _, _) => filter(level).context("--log-level")?,
        (None, Some(value), _) => match parse(&value, false) {
            Ok(filter) => filter,
            Err(error) => {
                crate::say!("punie: ignoring RUST_LOG: {error}; logging at {DEFAULT_LEVEL}");
                filter(DEFAULT_LEVEL)?
            }
        },
        (None, None, Some(level)) => filter(level).context("log-level")?,
        (None, None, None) => filter(DEFAULT_LEVEL)?,
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && crate::text::colour_wanted())
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
        .with(tracing_subscriber::filter::filter_fn(holds_no_secret))
        .with(stderr)
        .with(file)
        .try_init()
        .map_err(|error| anyhow::anyhow!("cannot install the logger: {error}"))
}

/// Whether an event may be logged whatever the filter asks for: the
/// WebSocket library traces a client's whole handshake, the access token in
/// its `Authorization` header with it, and the token is never logged.
fn holds_no_secret(metadata: &tracing::Metadata<'_>) -> bool {
    let websocket = ["tungstenite", "tokio_tungstenite"]
        .iter()
        .any(|library| metadata.target().split("::").next() == Some(library));
    !(websocket && *metadata.level() == tracing::Level::TRACE)
}

/// The filter a `--log-level` value means, or why it means none.
pub fn filter(level: &str) -> Result<EnvFilter, FilterError> {
    parse(&directive_for(level), true).map_err(|error| FilterError {
        value: level.to_owned(),
        ..error
    })
}

fn directive_for(level: &str) -> String {
    let level = level.trim();
    if level.eq_ignore_ascii_case("off") {
        "off".to_owned()
    } else if LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        // The SDK warns of every error response it sends, without its
        // message: on a server, each client's mistake. Punie logs what it
        // answered itself, at debug. rmcp logs each MCP connection that
        // fails with the server's URL, and any secret in its query; Punie
        // says what failed, without it.
        format!("warn,agent_client_protocol::jsonrpc=error,rmcp=off,punie={level}")
    } else {
        level.to_owned()
    }
}

/// `directives` as a filter. tracing reads much that is surely a slip as
/// "everything from one target and nothing else" (`nonsense=` and `verbose`
/// both are), which silences every other line; those are refused here. A
/// bare target stays allowed in `RUST_LOG`, where it is the usual shorthand,
/// but not as a `--log-level` (`strict_words`), which documents levels.
fn parse(directives: &str, strict_words: bool) -> Result<EnvFilter, FilterError> {
    let refuse = |why: String| FilterError {
        value: directives.to_owned(),
        why,
    };
    // Split as tracing splits them.
    let parts: Vec<&str> = directives
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect();
    if parts.is_empty() {
        return Err(refuse("it is empty".to_owned()));
    }
    for &part in &parts {
        match level_of(part) {
            Some((_, "")) => return Err(refuse(format!("`{part}` names no level after `=`"))),
            Some((_, level)) if level.parse::<LevelFilter>().is_err() => {
                return Err(refuse(format!("`{level}` is not a level")));
            }
            None if strict_words
                && parts.len() == 1
                && !part.contains("::")
                && !part.contains('[')
                && part.parse::<LevelFilter>().is_err() =>
            {
                return Err(refuse(format!("`{part}` is not a level")));
            }
            _ => {}
        }
    }
    EnvFilter::builder()
        .parse(parts.join(","))
        .map_err(|error| refuse(error.to_string()))
}

/// A directive's target (and span) and its level, when it gives one with `=`.
fn level_of(directive: &str) -> Option<(&str, &str)> {
    let (target, level) = directive.rsplit_once('=')?;
    // An `=` inside a span's fields (`[span{field=value}]`) sets no level.
    if level.contains([']', '}']) {
        return None;
    }
    Some((target, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_applies_to_punie_and_keeps_dependencies_quiet() {
        assert_eq!(
            directive_for("debug"),
            "warn,agent_client_protocol::jsonrpc=error,rmcp=off,punie=debug"
        );
        assert_eq!(
            directive_for("TRACE"),
            "warn,agent_client_protocol::jsonrpc=error,rmcp=off,punie=TRACE"
        );
    }

    #[test]
    fn a_full_directive_is_used_as_written() {
        assert_eq!(
            directive_for("punie=debug,agent_client_protocol=trace"),
            "punie=debug,agent_client_protocol=trace"
        );
        assert!(filter("punie=debug,agent_client_protocol=trace").is_ok());
        assert!(filter("warn,punie[session{id=1}]=debug").is_ok());
        assert!(filter("punie::server").is_ok());
        assert!(filter("punie=debug, ").is_ok());
    }

    #[test]
    fn a_filter_that_would_silence_everything_by_mistake_is_refused() {
        for slip in [
            "nonsense=",
            "verbose",
            "punie=loud",
            "",
            " , ",
            "punie=debug,=",
        ] {
            assert!(filter(slip).is_err(), "`{slip}` is refused");
        }
        let error = filter("nonsense=").unwrap_err().to_string();
        assert!(error.contains("names no level"), "{error}");
    }

    #[test]
    fn rust_log_may_name_a_bare_target() {
        assert!(parse("punie", false).is_ok());
        assert!(parse("punie=", false).is_err());
    }
}
