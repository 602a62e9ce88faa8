//! The tracing subscriber: pretty on a terminal, JSON for machines, on
//! standard error so standard output stays for command output.

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::FormattedFields;
use tracing_subscriber::fmt::format::Writer;

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
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .fmt_fields(JsonSpanFields)
            .init();
    } else {
        builder.compact().init();
    }
    if effective.source == FilterSource::LogLevel
        && let Some(note) = effective.note
    {
        tracing::warn!("{note}");
    }
}

/// The span fields of the JSON log lines: a JSON object, as
/// `tracing_subscriber`'s own `JsonFields` writes it, but a field recorded
/// later (the call's `caller` and `room`, see `middleware::call_log`) is
/// appended to the object instead of the object being parsed and written
/// again: about 8,500 instructions per record on every call at `info`
/// (docs/benchmarks.md). A field recorded twice appears twice; the JSON
/// event formatter reads the object back with serde_json, where the later
/// value wins, as with `JsonFields`. So the log lines are the same.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonSpanFields;

impl<'writer> FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'writer>, fields: R) -> fmt::Result {
        writer.write_char('{')?;
        let mut object = JsonObject { out: &mut writer, first: true, result: Ok(()) };
        fields.record(&mut object);
        object.result?;
        writer.write_char('}')
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        // Reopened, appended to, closed again.
        if !current.fields.ends_with('}') {
            return Err(fmt::Error);
        }
        current.fields.pop();
        let first = current.fields == "{";
        let mut object = JsonObject { out: &mut current.fields, first, result: Ok(()) };
        fields.record(&mut object);
        let result = object.result;
        current.fields.push('}');
        result
    }
}

/// Writes the fields it visits as the members of a JSON object, with the
/// value types `JsonFields` gives them (text for `Debug` and `Display`).
struct JsonObject<'a> {
    out: &'a mut dyn fmt::Write,
    first: bool,
    result: fmt::Result,
}

impl JsonObject<'_> {
    fn member(&mut self, name: &str, value: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { "," };
        self.first = false;
        self.result = self
            .out
            .write_str(separator)
            .and_then(|()| json_string(self.out, name))
            .and_then(|()| self.out.write_char(':'))
            .and_then(|()| value(self.out));
    }
}

impl Visit for JsonObject<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's form: a number, or null when not finite.
        self.member(field.name(), |out| write!(out, "{}", serde_json::Value::from(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field.name(), |out| write!(out, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field.name(), |out| out.write_str(if value { "true" } else { "false" }));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.member(field.name(), |out| json_string(out, value));
    }

    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.member(field.name(), |out| write!(out, "{}", serde_json::Value::from(value)));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        // As `JsonFields`: fields of the `log` crate's records are metadata,
        // and raw identifiers lose their `r#`.
        if name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.member(name, |out| {
            out.write_char('"')?;
            write!(JsonEscaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `text` as a JSON string, quoted and escaped.
fn json_string(out: &mut dyn fmt::Write, text: &str) -> fmt::Result {
    out.write_char('"')?;
    JsonEscaped(out).write_str(text)?;
    out.write_char('"')
}

/// Escapes what is written through it as the inside of a JSON string.
struct JsonEscaped<'a>(&'a mut dyn fmt::Write);

impl fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain = 0;
        for (at, byte) in text.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&text[plain..at])?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = at + 1;
        }
        self.0.write_str(&text[plain..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a JSON subscriber writes while `emit` runs: with
    /// `tracing_subscriber`'s `JsonFields` or with [`JsonSpanFields`].
    fn json_lines(span_fields: bool, emit: fn()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Capture(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Capture {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let capture = Capture::default();
        let writer = capture.clone();
        let builder = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .without_time()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        if span_fields {
            tracing::subscriber::with_default(builder.fmt_fields(JsonSpanFields).finish(), emit);
        } else {
            tracing::subscriber::with_default(builder.finish(), emit);
        }
        String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn span_fields_log_as_json_fields_does() {
        fn emit() {
            use tracing::field;
            let span = tracing::info_span!(
                "call",
                rpc = %"/roomcontrol.v1.RoomControl/CreateToken",
                protocol = "grpc",
                caller = field::Empty,
                room = field::Empty,
                count = 3u64,
                signed = -4i64,
                ratio = 1.5,
                nan = f64::NAN,
                ok = true,
                r#type = ?"debug \"text\"",
            );
            let _entered = span.enter();
            tracing::info!("before");
            span.record("caller", field::display("API key \"ops\"\n\u{1b}[31m\\ \u{7f}"));
            span.record("room", "standup é \t\r\u{8}\u{c}\u{1}");
            tracing::info!(code = ?tonic::Code::NotFound, "call refused");
            span.record("room", "recorded again");
            tracing::warn!(latency_ms = 1.25, "after");
            let empty = tracing::info_span!("empty", room = field::Empty);
            let _entered = empty.enter();
            tracing::info!("in a span with no field yet");
            empty.record("room", "late");
            tracing::info!("in a span with a field recorded");
            let none = tracing::info_span!("none");
            let _entered = none.enter();
            tracing::info!("in a span with no field");
        }
        let expected = json_lines(false, emit);
        assert_eq!(expected.lines().count(), 6, "{expected}");
        assert_eq!(json_lines(true, emit), expected);
    }

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
