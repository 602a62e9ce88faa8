//! A rate as the configuration writes it: `"100/s"`, `"10/min"`,
//! `"2000/h"`, optionally with a burst (`"100/s burst 200"`), or `"off"`.
//!
//! `N/period` allows N calls per period, evenly spread (one every
//! period / N), and a burst of N calls at once after a quiet spell: GCRA
//! with a burst of N, as a token bucket of N tokens refilled at N per
//! period would allow. `burst B` sets the calls allowed at once to B
//! instead, the sustained rate unchanged.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What every rate setting accepts, for error messages.
pub const ACCEPTED_FORMS: &str = "expected a rate such as \"100/s\", \"10/min\" or \"2000/h\", optionally with a burst (\"100/s burst 200\"), or \"off\"";

/// Units a rate may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    Second,
    Minute,
    Hour,
}

impl Per {
    fn micros(self) -> u64 {
        match self {
            Per::Second => 1_000_000,
            Per::Minute => 60_000_000,
            Per::Hour => 3_600_000_000,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Per::Second => "s",
            Per::Minute => "min",
            Per::Hour => "h",
        }
    }

    fn parse(unit: &str) -> Option<Per> {
        match unit {
            "s" | "sec" | "second" => Some(Per::Second),
            "min" | "minute" => Some(Per::Minute),
            "h" | "hour" => Some(Per::Hour),
            _ => None,
        }
    }
}

/// The most calls allowed at once: beyond it the arithmetic (microseconds
/// in Redis's Lua, which counts in doubles) would lose precision, and no
/// sensible limit needs more.
const MAX_BURST: u32 = 1_000_000;

/// A rate limit: `count` calls per `per`, `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Per,
    pub burst: u32,
}

impl Rate {
    /// The time between two calls at the sustained rate, in microseconds
    /// (at least 1: the parser refuses faster rates).
    pub fn interval_micros(&self) -> u64 {
        self.per.micros() / u64::from(self.count)
    }

    /// How far ahead of the present a caller's budget may be spent: the
    /// burst's worth of intervals (GCRA's tolerance), in microseconds.
    pub fn tolerance_micros(&self) -> u64 {
        self.interval_micros() * u64::from(self.burst)
    }

    /// The time between two calls at the sustained rate.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_micros())
    }
}

impl fmt::Display for Rate {
    /// As the configuration writes it; the burst only when it is not the
    /// count (`"10/min"`, `"100/s burst 200"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.per.unit())?;
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

/// One `limits.*` setting: a rate, or no limit (`"off"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateSetting(pub Option<Rate>);

impl RateSetting {
    pub const OFF: RateSetting = RateSetting(None);

    /// Parses the setting; the error says what was expected (the caller
    /// adds the key and where its value came from).
    pub fn parse(text: &str) -> Result<RateSetting, String> {
        let text = text.trim();
        let wrong = || format!("{ACCEPTED_FORMS}; got {text:?}");
        if text.eq_ignore_ascii_case("off") {
            return Ok(RateSetting::OFF);
        }
        let mut words = text.split_whitespace();
        let rate = words.next().ok_or_else(wrong)?;
        let burst = match (words.next(), words.next(), words.next()) {
            (None, _, _) => None,
            (Some(word), Some(burst), None) if word.eq_ignore_ascii_case("burst") => {
                Some(burst.parse::<u32>().map_err(|_| wrong())?)
            }
            _ => return Err(wrong()),
        };
        let (count, unit) = rate.split_once('/').ok_or_else(wrong)?;
        let count: u32 = count.parse().map_err(|_| wrong())?;
        let per = Per::parse(&unit.to_ascii_lowercase()).ok_or_else(wrong)?;
        if count == 0 {
            return Err(format!("a rate of 0 would refuse every call; write \"off\" for no limit; got {text:?}"));
        }
        if u64::from(count) > per.micros() {
            return Err(format!("at most {}/{}; got {text:?}", per.micros(), per.unit()));
        }
        let burst = burst.unwrap_or(count);
        if burst == 0 || burst > MAX_BURST {
            return Err(format!("a burst from 1 to {MAX_BURST}; got {text:?}"));
        }
        Ok(RateSetting(Some(Rate { count, per, burst })))
    }

    pub fn rate(&self) -> Option<Rate> {
        self.0
    }
}

impl From<Rate> for RateSetting {
    fn from(rate: Rate) -> Self {
        RateSetting(Some(rate))
    }
}

impl fmt::Display for RateSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(rate) => rate.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl std::str::FromStr for RateSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        RateSetting::parse(text)
    }
}

impl Serialize for RateSetting {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = RateSetting;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ACCEPTED_FORMS)
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RateSetting, E> {
                RateSetting::parse(text).map_err(E::custom)
            }

            // A bare number (`limits.writes = 100`) has no period.
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<RateSetting, E> {
                Err(E::custom(format!("{ACCEPTED_FORMS}; got {number}, which has no period (\"{number}/s\"?)")))
            }

            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<RateSetting, E> {
                Err(E::custom(format!("{ACCEPTED_FORMS}; got {number}")))
            }

            fn visit_bool<E: serde::de::Error>(self, value: bool) -> Result<RateSetting, E> {
                Err(E::custom(format!("{ACCEPTED_FORMS}; got {value}")))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, per: Per, burst: u32) -> RateSetting {
        RateSetting(Some(Rate { count, per, burst }))
    }

    #[test]
    fn rates_parse_in_every_unit_with_an_optional_burst() {
        let cases = [
            ("100/s", rate(100, Per::Second, 100)),
            ("10/min", rate(10, Per::Minute, 10)),
            ("2000/h", rate(2000, Per::Hour, 2000)),
            ("5/sec", rate(5, Per::Second, 5)),
            ("5/second", rate(5, Per::Second, 5)),
            ("5/minute", rate(5, Per::Minute, 5)),
            ("5/hour", rate(5, Per::Hour, 5)),
            ("5/MIN", rate(5, Per::Minute, 5)),
            ("100/s burst 200", rate(100, Per::Second, 200)),
            ("  10/min   BURST 1 ", rate(10, Per::Minute, 1)),
            ("off", RateSetting::OFF),
            ("OFF", RateSetting::OFF),
        ];
        for (text, expected) in cases {
            assert_eq!(RateSetting::parse(text), Ok(expected), "{text:?}");
        }
    }

    #[test]
    fn bad_rates_are_refused_with_the_accepted_forms() {
        for bad in [
            "",
            "100",
            "100/",
            "/s",
            "100/d",
            "100/ms",
            "1.5/s",
            "-1/s",
            "ten/s",
            "100 /s",
            "100/s burst",
            "100/s 200",
            "100/s burst x",
            "100/s burst 2 3",
            "100/s limit 200",
        ] {
            let error = RateSetting::parse(bad).unwrap_err();
            assert!(error.starts_with(ACCEPTED_FORMS), "{bad:?}: {error}");
            assert!(error.ends_with(&format!("got {:?}", bad.trim())), "{bad:?}: {error}");
        }
    }

    #[test]
    fn rates_that_cannot_be_kept_say_why() {
        assert!(RateSetting::parse("0/s").unwrap_err().contains("write \"off\""));
        assert!(RateSetting::parse("2000000/s").unwrap_err().contains("at most 1000000/s"));
        assert!(RateSetting::parse("10/s burst 0").unwrap_err().contains("a burst from 1 to 1000000"));
        assert!(RateSetting::parse("10/s burst 1000001").unwrap_err().contains("a burst from 1 to 1000000"));
        assert!(RateSetting::parse("1000000/s").is_ok());
    }

    #[test]
    fn rates_are_written_back_as_the_configuration_reads_them() {
        for text in ["100/s", "10/min", "2000/h", "100/s burst 200", "10/min burst 1", "off"] {
            let parsed = RateSetting::parse(text).unwrap();
            assert_eq!(parsed.to_string(), text);
            assert_eq!(RateSetting::parse(&parsed.to_string()), Ok(parsed));
        }
        assert_eq!(RateSetting::parse("10/minute burst 10").unwrap().to_string(), "10/min");
    }

    #[test]
    fn intervals_spread_the_count_over_the_period() {
        let rate = RateSetting::parse("10/min burst 3").unwrap().rate().unwrap();
        assert_eq!(rate.interval(), Duration::from_secs(6));
        assert_eq!(rate.tolerance_micros(), 18_000_000);
        assert_eq!(RateSetting::parse("1000000/s").unwrap().rate().unwrap().interval_micros(), 1);
    }
}
