//! Durations as users read them: in the units the configuration is written
//! in (`24h`, `1h 30m`, `500ms`), never days, months or years.

use std::fmt::Write;
use std::time::Duration;

/// `duration` in hours, minutes, seconds and fractions of a second, largest
/// unit first, units that are zero left out: 86400 s is `24h`, 5400 s
/// `1h 30m`, 1.5 s `1s 500ms`, zero `0s`. `humantime::parse_duration` (what
/// the configuration and `--ttl` read) reads it back to the same value.
pub fn display(duration: Duration) -> String {
    let seconds = duration.as_secs();
    let nanos = u64::from(duration.subsec_nanos());
    let parts = [
        (seconds / 3600, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
        (nanos / 1_000_000, "ms"),
        (nanos / 1_000 % 1_000, "us"),
        (nanos % 1_000, "ns"),
    ];
    let mut text = String::new();
    for (value, unit) in parts.into_iter().filter(|(value, _)| *value > 0) {
        if !text.is_empty() {
            text.push(' ');
        }
        let _ = write!(text, "{value}{unit}");
    }
    if text.is_empty() { "0s".to_owned() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_written_in_hours_minutes_and_seconds() {
        let cases = [
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(5_400), "1h 30m"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_millis(1_500), "1s 500ms"),
            (Duration::ZERO, "0s"),
            (Duration::from_secs(7 * 86_400), "168h"),
            (Duration::from_secs(6 * 3600), "6h"),
            (Duration::from_secs(3_601), "1h 1s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1_002_003), "1ms 2us 3ns"),
        ];
        for (duration, expected) in cases {
            assert_eq!(display(duration), expected, "{duration:?}");
        }
    }

    #[test]
    fn what_is_written_reads_back_to_the_same_duration() {
        let durations = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(1_500),
            Duration::from_secs(90),
            Duration::from_secs(5_400),
            Duration::from_secs(86_400),
            Duration::from_secs(7 * 86_400),
            Duration::from_secs(365 * 86_400 + 1),
            Duration::new(123_456_789, 987_654_321),
            Duration::MAX,
        ];
        for duration in durations {
            let text = display(duration);
            assert_eq!(humantime::parse_duration(&text).ok(), Some(duration), "{text}");
        }
    }
}
