//! GetUsage's figures: buckets on a time zone's clock (or one per room),
//! each with the room sessions that started in it, the participant time
//! inside it, the most participants connected at once during it, and the
//! distinct identities connected during it. Computed from the participant
//! sessions' intervals, so the order their events came in does not matter.

use std::collections::{BTreeMap, HashSet};

use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, ZonedDateTime};

use crate::store::history::{UsageParticipant, UsageSession};

/// What GetUsage groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketKind {
    Hour,
    Day,
    Month,
    Room,
}

/// One bucket's bounds (unix microseconds, clipped to the range) and label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub end: i64,
    pub label: String,
    /// The whole hour, day or month (unix microseconds) the bucket is or
    /// is a part of.
    pub calendar: (i64, i64),
}

impl Bucket {
    /// A bucket over [start, end) that is a whole bucket of its own.
    pub fn new(start: i64, end: i64, label: String) -> Bucket {
        Bucket { start, end, label, calendar: (start, end) }
    }

    /// Not clipped: the whole hour, day or month, whatever range asked for
    /// it (what the usage cache keeps).
    pub fn whole(&self) -> bool {
        (self.start, self.end) == self.calendar
    }
}

/// One bucket's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub sessions: u32,
    pub participant_micros: i64,
    pub peak_concurrency: u32,
    pub unique_identities: u32,
    pub inferred: bool,
}

/// Most buckets one answer may hold.
pub const MAX_BUCKETS: usize = 10_000;

/// A zone by its IANA name; empty is UTC.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() {
        return Ok(TimeZone::UTC);
    }
    TimeZone::get(name)
        .map_err(|_| format!("must be an IANA time zone name such as \"Europe/Paris\" or \"UTC\", got {name:?}"))
}

fn timestamp(micros: i64) -> Result<Timestamp, String> {
    Timestamp::from_microsecond(micros).map_err(|error| format!("time out of range: {error}"))
}

/// The calendar buckets covering [from, to) on the zone's clock, clipped to
/// the range.
pub fn time_buckets(from: i64, to: i64, kind: BucketKind, zone: &TimeZone) -> Result<Vec<Bucket>, String> {
    let error = |error: jiff::Error| error.to_string();
    let zoned = timestamp(from)?.to_zoned_datetime(zone.clone());
    let (mut start, format): (ZonedDateTime, &str) = match kind {
        BucketKind::Hour => {
            (zoned.with().minute(0).second(0).subsec_nanosecond(0).build().map_err(error)?, "%Y-%m-%dT%H%:z")
        }
        BucketKind::Day => (zoned.start_of_day().map_err(error)?, "%Y-%m-%d"),
        BucketKind::Month => (zoned.first_of_month().map_err(error)?.start_of_day().map_err(error)?, "%Y-%m"),
        BucketKind::Room => return Err("ROOM buckets are not on the clock".to_owned()),
    };
    let mut buckets = Vec::new();
    while start.timestamp().as_microsecond() < to {
        let next = match kind {
            BucketKind::Hour => start.checked_add(Span::new().hours(1)).map_err(error)?,
            BucketKind::Day => start.checked_add(Span::new().days(1)).map_err(error)?.start_of_day().map_err(error)?,
            _ => start
                .checked_add(Span::new().months(1))
                .map_err(error)?
                .first_of_month()
                .map_err(error)?
                .start_of_day()
                .map_err(error)?,
        };
        let calendar = (start.timestamp().as_microsecond(), next.timestamp().as_microsecond());
        let bounds = (calendar.0.max(from), calendar.1.min(to));
        buckets.push(Bucket { start: bounds.0, end: bounds.1, label: start.strftime(format).to_string(), calendar });
        if buckets.len() > MAX_BUCKETS {
            return Err(format!("more than {MAX_BUCKETS} buckets: ask for a shorter range or a larger bucket"));
        }
        start = next;
    }
    Ok(buckets)
}

/// A participant session as the figures count it at `now`: from its join
/// to its leave, or to `now` while it is open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval {
    pub joined: i64,
    pub left: i64,
}

impl Interval {
    /// `None` for a session that joined after `now`.
    pub(crate) fn of(participant: &UsageParticipant, now: i64) -> Option<Interval> {
        let joined = participant.joined_at;
        (joined <= now).then(|| Interval { joined, left: participant.left_at.unwrap_or(now).max(joined) })
    }

    /// Its join and end as changes of the running count (time, timeline
    /// order, +1 or -1). A session of no length counts in the peak only
    /// when the timeline put its end after its start.
    pub(crate) fn changes(&self, participant: &UsageParticipant) -> Option<[(i64, i64, i64); 2]> {
        (self.left > self.joined || participant.left_cursor > participant.joined_cursor)
            .then_some([(self.joined, participant.joined_cursor, 1), (self.left, participant.left_cursor, -1)])
    }

    /// Whether it counts in [start, end): it overlaps the range, or, of no
    /// length, sits in it.
    pub(crate) fn overlaps(&self, start: i64, end: i64) -> bool {
        let Interval { joined, left } = *self;
        joined < end && (left > start || (left == joined && joined >= start))
    }
}

/// The figures of each bucket (in order, not overlapping), from the
/// participant sessions and room session starts of the rooms counted.
pub fn figures(
    buckets: &[Bucket],
    participants: &[UsageParticipant],
    sessions: &[UsageSession],
    now: i64,
) -> Vec<Figures> {
    let mut figures = vec![Figures::default(); buckets.len()];
    let index_of = |at: i64| buckets.partition_point(|bucket| bucket.end <= at);
    for session in sessions {
        let index = index_of(session.started_at);
        if buckets.get(index).is_some_and(|bucket| bucket.start <= session.started_at) {
            figures[index].sessions += 1;
            figures[index].inferred |= session.inferred;
        }
    }
    let mut identities: Vec<HashSet<&str>> = vec![HashSet::new(); buckets.len()];
    let mut changes = Vec::with_capacity(participants.len() * 2);
    for participant in participants {
        let Some(interval) = Interval::of(participant, now) else {
            continue;
        };
        let Interval { joined, left } = interval;
        changes.extend(interval.changes(participant).into_iter().flatten());
        let mut index = index_of(joined);
        while let Some(bucket) = buckets.get(index) {
            if joined >= bucket.end {
                break;
            }
            if interval.overlaps(bucket.start, bucket.end) {
                let inside = left.min(bucket.end) - joined.max(bucket.start);
                figures[index].participant_micros += inside.max(0);
                identities[index].insert(participant.identity.as_str());
                figures[index].inferred |= participant.inferred;
            }
            if left <= bucket.end {
                break;
            }
            index += 1;
        }
    }
    for (figure, identities) in figures.iter_mut().zip(&identities) {
        figure.unique_identities = u32::try_from(identities.len()).unwrap_or(u32::MAX);
    }
    // Peak: the running count of open intervals in time and timeline
    // order, its highest value within each bucket.
    changes.sort_unstable();
    let (mut next, mut running) = (0, 0i64);
    for (figure, bucket) in figures.iter_mut().zip(buckets) {
        while next < changes.len() && changes[next].0 <= bucket.start {
            running += changes[next].2;
            next += 1;
        }
        let mut peak = running;
        while next < changes.len() && changes[next].0 < bucket.end {
            running += changes[next].2;
            peak = peak.max(running);
            next += 1;
        }
        figure.peak_concurrency = u32::try_from(peak.max(0)).unwrap_or(u32::MAX);
    }
    figures
}

/// ROOM buckets: one per room with anything in [from, to), by name.
pub fn room_figures(
    from: i64,
    to: i64,
    participants: &[UsageParticipant],
    sessions: &[UsageSession],
    now: i64,
) -> Vec<(String, Figures)> {
    let mut rooms: BTreeMap<&str, (Vec<UsageParticipant>, Vec<UsageSession>)> = BTreeMap::new();
    for participant in participants {
        rooms.entry(participant.room.as_str()).or_default().0.push(participant.clone());
    }
    for session in sessions {
        rooms.entry(session.room.as_str()).or_default().1.push(session.clone());
    }
    let whole = [Bucket::new(from, to, String::new())];
    rooms
        .into_iter()
        .map(|(room, (participants, sessions))| {
            let figures = figures(&whole, &participants, &sessions, now).pop().unwrap_or_default();
            (room.to_owned(), figures)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000_000;

    fn at(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_microsecond()
    }

    fn participant(identity: &str, joined: i64, left: Option<i64>) -> UsageParticipant {
        UsageParticipant {
            room: "r".into(),
            identity: identity.into(),
            joined_at: joined,
            left_at: left,
            inferred: false,
            joined_cursor: joined,
            left_cursor: left.unwrap_or(i64::MAX),
        }
    }

    #[test]
    fn days_follow_the_zones_calendar_across_a_dst_change() {
        let paris = time_zone("Europe/Paris").unwrap();
        // 2026-10-25: Paris falls back, a day of 25 hours.
        let buckets =
            time_buckets(at("2026-10-23T22:00:00Z"), at("2026-10-26T23:00:00Z"), BucketKind::Day, &paris).unwrap();
        let labels: Vec<&str> = buckets.iter().map(|bucket| bucket.label.as_str()).collect();
        assert_eq!(labels, ["2026-10-24", "2026-10-25", "2026-10-26"]);
        assert_eq!(buckets[1].end - buckets[1].start, 25 * HOUR);
        assert_eq!(buckets[1].start, at("2026-10-24T22:00:00Z"));
        assert!(buckets.iter().all(Bucket::whole));
    }

    #[test]
    fn hours_in_a_half_hour_zone_start_on_its_clock() {
        let india = time_zone("Asia/Kolkata").unwrap();
        let buckets =
            time_buckets(at("2026-11-28T00:00:00Z"), at("2026-11-28T02:00:00Z"), BucketKind::Hour, &india).unwrap();
        // 05:30 local is the first bucket's (clipped) start; 06:00 the next.
        assert_eq!(buckets[0].label, "2026-11-28T05+05:30");
        assert_eq!((buckets[0].start, buckets[0].end), (at("2026-11-28T00:00:00Z"), at("2026-11-28T00:30:00Z")));
        assert_eq!(buckets.len(), 3);
        // The range cuts the first and the last hour.
        let whole: Vec<bool> = buckets.iter().map(Bucket::whole).collect();
        assert_eq!(whole, [false, true, false]);
        assert!(time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn figures_split_intervals_across_buckets() {
        let buckets = vec![Bucket::new(0, HOUR, "a".into()), Bucket::new(HOUR, 2 * HOUR, "b".into())];
        let participants = vec![
            participant("alice", HOUR / 2, Some(HOUR + HOUR / 2)),
            participant("bob", HOUR / 4, Some(HOUR / 2)),
            participant("alice", HOUR + HOUR / 2, None),
        ];
        let sessions = vec![UsageSession { room: "r".into(), started_at: 0, inferred: false }];
        let figures = figures(&buckets, &participants, &sessions, 2 * HOUR);
        assert_eq!(figures[0].sessions, 1);
        assert_eq!(figures[0].participant_micros, HOUR / 2 + HOUR / 4);
        assert_eq!(figures[1].participant_micros, HOUR / 2 + HOUR / 2);
        // bob leaves as alice joins: never two at once in the first hour.
        assert_eq!(figures[0].peak_concurrency, 1);
        assert_eq!(figures[1].peak_concurrency, 1);
        assert_eq!((figures[0].unique_identities, figures[1].unique_identities), (2, 1));
    }
}
