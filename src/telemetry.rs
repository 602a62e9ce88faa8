//! The tracing subscriber: pretty on a terminal, JSON for machines, on
//! standard error so standard output stays for command output.

use std::io::IsTerminal;

use serde::Serialize;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The environment variable whose filter, when set and valid, replaces
/// `log.level`.
pub const RUST_LOG: &str = "RUST_LOG";

/// Where the filter in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum FilterSource {
    #[serde(rename = "RUST_LOG")]
    RustLog,
    #[serde(rename = "log.level")]
    LogLevel,
}

/// The tracing filter the process logs with, as `roomcontrol config`
/// reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveFilter {
    /// The filter directives, e.g. `info` or `roomcontrol=debug,info`.
    pub filter: String,
    pub source: FilterSource,
    /// Set when `RUST_LOG` is: what it does to `log.level`.
    pub note: Option<String>,
}

/// The filter in force: `RUST_LOG` when it is set and a valid filter (even
/// an empty one), else `log.level`. [`init`] applies exactly this choice.
pub fn effective_filter(config: &LogConfig) -> EffectiveFilter {
    // Like EnvFilter::try_from_default_env: a value that is not Unicode
    // counts as unset.
    choose(std::env::var(RUST_LOG).ok(), &config.level)
}

fn choose(rust_log: Option<String>, level: &str) -> EffectiveFilter {
    let from_config = |note| EffectiveFilter { filter: level.to_owned(), source: FilterSource::LogLevel, note };
    let Some(value) = rust_log else {
        return from_config(None);
    };
    match EnvFilter::try_new(&value) {
        Ok(_) if value.is_empty() => EffectiveFilter {
            filter: value,
            source: FilterSource::RustLog,
            note: Some(
                "RUST_LOG is set but empty: it overrides log.level and turns every log line off; unset it to log at log.level"
                    .to_owned(),
            ),
        },
        Ok(_) => EffectiveFilter {
            filter: value,
            source: FilterSource::RustLog,
            note: Some("RUST_LOG is set: it overrides log.level; unset it to log at log.level".to_owned()),
        },
        Err(error) => from_config(Some(format!(
            "RUST_LOG {value:?} is not a tracing filter ({error}), so log.level applies; fix RUST_LOG or unset it"
        ))),
    }
}

/// Installs the process-wide subscriber. `RUST_LOG`, when set and valid,
/// overrides `log.level` (see [`effective_filter`]).
pub fn init(config: &LogConfig) {
    let effective = effective_filter(config);
    let filter = match effective.source {
        // The same parse effective_filter accepted it with.
        FilterSource::RustLog => {
            EnvFilter::try_new(&effective.filter).unwrap_or_else(|_| EnvFilter::new(&config.level))
        }
        FilterSource::LogLevel => EnvFilter::new(&config.level),
    };
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).with_current_span(true).with_span_list(false).init();
    } else {
        builder.compact().init();
    }
    if effective.source == FilterSource::LogLevel
        && let Some(note) = effective.note
    {
        tracing::warn!("{note}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_level_applies_when_rust_log_is_unset() {
        let effective = choose(None, "info");
        assert_eq!(
            (effective.filter.as_str(), effective.source, effective.note),
            ("info", FilterSource::LogLevel, None)
        );
    }

    #[test]
    fn a_valid_rust_log_wins_even_when_empty() {
        let effective = choose(Some("roomcontrol=debug".to_owned()), "info");
        assert_eq!((effective.filter.as_str(), effective.source), ("roomcontrol=debug", FilterSource::RustLog));
        assert!(effective.note.unwrap().contains("overrides log.level"));
        let effective = choose(Some(String::new()), "info");
        assert_eq!((effective.filter.as_str(), effective.source), ("", FilterSource::RustLog));
        assert!(effective.note.unwrap().contains("turns every log line off"));
    }

    #[test]
    fn an_invalid_rust_log_is_ignored_and_said_so() {
        let effective = choose(Some("debug=what=x".to_owned()), "warn");
        assert_eq!((effective.filter.as_str(), effective.source), ("warn", FilterSource::LogLevel));
        let note = effective.note.unwrap();
        assert!(note.contains("\"debug=what=x\" is not a tracing filter") && note.contains("fix RUST_LOG"), "{note}");
    }
}
