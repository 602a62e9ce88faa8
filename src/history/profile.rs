//! A whole bucket's profile: what GetUsage needs to answer any part of the
//! bucket that starts at its start or ends at its end (the first day of
//! "the last 30 days", cut by the range) without reading the bucket's
//! participant sessions again. Kept beside the bucket's cached figures and
//! invalidated with them.
//!
//! It holds the running count of open participant sessions as a step
//! function (each instant it changes, its value after the change and the
//! highest value while the changes of that instant apply, in timeline
//! order), the room sessions' starts, each identity's first join and last
//! reach, and the inferred intervals. The figures it gives are those
//! [`usage::figures`] computes from the rows, to the microsecond; a unit
//! test compares the two on random sessions.

use std::collections::HashMap;

use bytes::{Buf, BufMut};
use prost::encoding::{decode_varint, encode_varint};

use super::usage::{Figures, Interval};
use crate::store::history::{UsageParticipant, UsageSession};

/// The encoding's version: a profile of another version is read as absent.
const VERSION: u64 = 1;

/// See the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    start: i64,
    end: i64,
    /// The running count once every change at or before `start` applied.
    initial: i64,
    /// The instants in (start, end) where the running count changes.
    times: Vec<i64>,
    /// The running count after the changes at `times[k]`.
    after: Vec<i64>,
    /// The highest running count while the changes at `times[k]` apply.
    highest: Vec<i64>,
    /// Room session starts in [start, end), in order; those inferred.
    sessions: Vec<i64>,
    inferred_sessions: Vec<i64>,
    /// Inferred participant sessions: (joined, reach).
    inferred_participants: Vec<(i64, i64)>,
    /// Per identity, the first join (not before `start`) and the last
    /// reach (an instant a range must start before to overlap), in order.
    firsts: Vec<i64>,
    reaches: Vec<i64>,
    // Derived on building and decoding, never stored.
    /// The participant time from `start` to `times[k]`.
    integral: Vec<i64>,
    /// The highest of `highest[..=k]`, and of `highest[k..]`.
    prefix_highest: Vec<i64>,
    suffix_highest: Vec<i64>,
}

/// The instant a range must start before for the session to count in it:
/// its end, or, for a session of no length, just after its join.
fn reach(joined: i64, left: i64) -> i64 {
    if left > joined { left } else { joined.saturating_add(1) }
}

impl Profile {
    /// The profile of the bucket [start, end) from the rows read for it
    /// (every participant session overlapping it, every room session
    /// started in it), as [`usage::figures`] would count them at `now`.
    pub fn build(
        start: i64,
        end: i64,
        participants: &[UsageParticipant],
        sessions: &[UsageSession],
        now: i64,
    ) -> Profile {
        let mut changes = Vec::with_capacity(participants.len() * 2);
        let mut identities: HashMap<&str, (i64, i64)> = HashMap::new();
        let mut inferred_participants = Vec::new();
        for participant in participants {
            let Some(interval) = Interval::of(participant, now) else {
                continue;
            };
            changes.extend(interval.changes(participant).into_iter().flatten());
            if !interval.overlaps(start, end) {
                continue;
            }
            let (first, last) = (interval.joined.max(start), reach(interval.joined, interval.left));
            let entry = identities.entry(participant.identity.as_str()).or_insert((first, last));
            *entry = (entry.0.min(first), entry.1.max(last));
            if participant.inferred {
                inferred_participants.push((first, last));
            }
        }
        changes.sort_unstable();
        let mut profile = Profile {
            start,
            end,
            initial: 0,
            times: Vec::new(),
            after: Vec::new(),
            highest: Vec::new(),
            sessions: Vec::new(),
            inferred_sessions: Vec::new(),
            inferred_participants,
            firsts: identities.values().map(|&(first, _)| first).collect(),
            reaches: identities.values().map(|&(_, last)| last).collect(),
            integral: Vec::new(),
            prefix_highest: Vec::new(),
            suffix_highest: Vec::new(),
        };
        let mut running = 0i64;
        for &(time, _, change) in &changes {
            if time >= end {
                break;
            }
            running += change;
            if time <= start {
                profile.initial = running;
            } else if profile.times.last() == Some(&time) {
                let last = profile.times.len() - 1;
                profile.after[last] = running;
                profile.highest[last] = profile.highest[last].max(running);
            } else {
                profile.times.push(time);
                profile.after.push(running);
                profile.highest.push(running);
            }
        }
        for session in sessions {
            if (start..end).contains(&session.started_at) {
                profile.sessions.push(session.started_at);
                if session.inferred {
                    profile.inferred_sessions.push(session.started_at);
                }
            }
        }
        profile.sessions.sort_unstable();
        profile.inferred_sessions.sort_unstable();
        profile.firsts.sort_unstable();
        profile.reaches.sort_unstable();
        profile.inferred_participants.sort_unstable();
        profile.derive();
        profile
    }

    fn derive(&mut self) {
        self.integral = Vec::with_capacity(self.times.len());
        let (mut total, mut at, mut running) = (0i64, self.start, self.initial);
        for (&time, &after) in self.times.iter().zip(&self.after) {
            total = total.saturating_add(running.saturating_mul(time - at));
            self.integral.push(total);
            (at, running) = (time, after);
        }
        self.prefix_highest = self
            .highest
            .iter()
            .scan(i64::MIN, |most, &highest| {
                *most = (*most).max(highest);
                Some(*most)
            })
            .collect();
        let mut suffix: Vec<i64> = self
            .highest
            .iter()
            .rev()
            .scan(i64::MIN, |most, &highest| {
                *most = (*most).max(highest);
                Some(*most)
            })
            .collect();
        suffix.reverse();
        self.suffix_highest = suffix;
    }

    /// The bucket's bounds.
    pub fn bounds(&self) -> (i64, i64) {
        (self.start, self.end)
    }

    /// The running count at `at` (every change at or before it applied),
    /// and the participant time from the start to `at`.
    fn state(&self, at: i64) -> (i64, i64) {
        let index = self.times.partition_point(|&time| time <= at);
        if index == 0 {
            return (self.initial, self.initial.saturating_mul(at - self.start));
        }
        let running = self.after[index - 1];
        (running, self.integral[index - 1].saturating_add(running.saturating_mul(at - self.times[index - 1])))
    }

    /// The figures of [from, to), a part of the bucket that shares its
    /// start or its end; `None` for any other range.
    pub fn figures(&self, from: i64, to: i64) -> Option<Figures> {
        let inside = self.start <= from && from < to && to <= self.end;
        if !inside || (from != self.start && to != self.end) {
            return None;
        }
        let (running, before) = self.state(from);
        let (_, through) = self.state(to);
        // The highest count of the instants strictly inside (from, to).
        let first = self.times.partition_point(|&time| time <= from);
        let past = self.times.partition_point(|&time| time < to);
        let highest = if first >= past {
            i64::MIN
        } else if to == self.end {
            self.suffix_highest[first]
        } else {
            self.prefix_highest[past - 1]
        };
        let count = |sorted: &[i64]| sorted.partition_point(|&at| at < to) - sorted.partition_point(|&at| at < from);
        // An identity counts when one of its sessions overlaps the range:
        // at the bucket's end, one reaching past `from`; at its start, one
        // joined before `to`.
        let identities = if to == self.end {
            self.reaches.len() - self.reaches.partition_point(|&reach| reach <= from)
        } else {
            self.firsts.partition_point(|&first| first < to)
        };
        let inferred = count(&self.inferred_sessions) > 0
            || self.inferred_participants.iter().any(|&(joined, reach)| joined < to && reach > from);
        Some(Figures {
            sessions: u32::try_from(count(&self.sessions)).unwrap_or(u32::MAX),
            participant_micros: through.saturating_sub(before).max(0),
            peak_concurrency: u32::try_from(running.max(highest).max(0)).unwrap_or(u32::MAX),
            unique_identities: u32::try_from(identities).unwrap_or(u32::MAX),
            inferred,
        })
    }

    /// The profile as bytes: varints, each instant as its distance from
    /// the one before.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.times.len() * 4 + (self.firsts.len() + self.sessions.len()) * 3);
        let zigzag = |value: i64| ((value << 1) ^ (value >> 63)) as u64;
        encode_varint(VERSION, &mut out);
        encode_varint(zigzag(self.start), &mut out);
        encode_varint(zigzag(self.end - self.start), &mut out);
        encode_varint(zigzag(self.initial), &mut out);
        encode_varint(self.times.len() as u64, &mut out);
        let (mut at, mut running) = (self.start, self.initial);
        for ((&time, &after), &highest) in self.times.iter().zip(&self.after).zip(&self.highest) {
            encode_varint(zigzag(time - at), &mut out);
            encode_varint(zigzag(after - running), &mut out);
            encode_varint(zigzag(highest - after), &mut out);
            (at, running) = (time, after);
        }
        for sorted in [&self.sessions, &self.inferred_sessions, &self.firsts, &self.reaches] {
            encode_varint(sorted.len() as u64, &mut out);
            let mut at = self.start;
            for &value in sorted.iter() {
                encode_varint(zigzag(value - at), &mut out);
                at = value;
            }
        }
        encode_varint(self.inferred_participants.len() as u64, &mut out);
        for &(joined, reach) in &self.inferred_participants {
            encode_varint(zigzag(joined - self.start), &mut out);
            encode_varint(zigzag(reach - self.start), &mut out);
        }
        out.put_u8(0xff);
        out
    }

    /// A profile from [`Profile::encode`]'s bytes; `None` when they are not
    /// one (another version, cut short, out of order, out of range).
    pub fn decode(mut bytes: &[u8]) -> Option<Profile> {
        let buf = &mut bytes;
        let unzigzag = |value: u64| ((value >> 1) as i64) ^ -((value & 1) as i64);
        let next = |buf: &mut &[u8]| decode_varint(buf).ok().map(unzigzag);
        // A length no longer than the bytes left: a count of entries of at
        // least one byte each (so a damaged length cannot ask for memory).
        let length = |buf: &mut &[u8]| {
            let length = decode_varint(buf).ok()?;
            (length <= buf.remaining() as u64).then_some(length as usize)
        };
        if decode_varint(buf).ok()? != VERSION {
            return None;
        }
        let start = next(buf)?;
        let end = start.checked_add(next(buf)?)?;
        let initial = next(buf)?;
        let points = length(buf)?;
        let (mut times, mut after, mut highest) =
            (Vec::with_capacity(points), Vec::with_capacity(points), Vec::with_capacity(points));
        let (mut at, mut running) = (start, initial);
        for _ in 0..points {
            let time = at.checked_add(next(buf)?)?;
            let value = running.checked_add(next(buf)?)?;
            let most = value.checked_add(next(buf)?)?;
            if time <= at || time >= end || most < value {
                return None;
            }
            times.push(time);
            after.push(value);
            highest.push(most);
            (at, running) = (time, value);
        }
        let mut sorted = || -> Option<Vec<i64>> {
            let count = length(buf)?;
            let mut values = Vec::with_capacity(count);
            let mut at = start;
            for _ in 0..count {
                let value = at.checked_add(next(buf)?)?;
                if value < at {
                    return None;
                }
                values.push(value);
                at = value;
            }
            Some(values)
        };
        let (sessions, inferred_sessions, firsts, reaches) = (sorted()?, sorted()?, sorted()?, sorted()?);
        let count = length(buf)?;
        let mut inferred_participants = Vec::with_capacity(count);
        for _ in 0..count {
            inferred_participants.push((start.checked_add(next(buf)?)?, start.checked_add(next(buf)?)?));
        }
        if buf.remaining() != 1 || buf.get_u8() != 0xff || end <= start {
            return None;
        }
        let mut profile = Profile {
            start,
            end,
            initial,
            times,
            after,
            highest,
            sessions,
            inferred_sessions,
            inferred_participants,
            firsts,
            reaches,
            integral: Vec::new(),
            prefix_highest: Vec::new(),
            suffix_highest: Vec::new(),
        };
        profile.derive();
        Some(profile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::usage::{Bucket, figures};

    /// xorshift: the same sessions every run.
    struct Random(u64);

    impl Random {
        fn below(&mut self, bound: i64) -> i64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % bound as u64) as i64
        }
    }

    const START: i64 = 1_000_000_000;
    const LENGTH: i64 = 100_000;

    fn sessions(random: &mut Random, count: usize) -> (Vec<UsageParticipant>, Vec<UsageSession>) {
        let mut participants = Vec::new();
        for cursor in 0..count as i64 {
            // From before the bucket to after it; whole "seconds" of 1,000
            // so that instants repeat and the cursor decides their order.
            let joined = START - LENGTH / 4 + random.below(LENGTH * 3 / 2) / 1000 * 1000;
            let left = match random.below(10) {
                0 => None,
                1 => Some(joined),
                _ => Some(joined + random.below(LENGTH / 2) / 1000 * 1000),
            };
            participants.push(UsageParticipant {
                room: String::new(),
                identity: format!("user-{}", random.below(40)),
                joined_at: joined,
                left_at: left,
                inferred: random.below(25) == 0,
                joined_cursor: cursor * 2 + random.below(2),
                left_cursor: if left.is_none() { i64::MAX } else { cursor * 2 + random.below(3) },
            });
        }
        let sessions = (0..count / 4)
            .map(|_| UsageSession {
                room: String::new(),
                started_at: START + random.below(LENGTH),
                inferred: random.below(10) == 0,
            })
            .collect();
        (participants, sessions)
    }

    /// What usage::figures counts for [from, to) from the rows.
    fn from_rows(
        from: i64,
        to: i64,
        participants: &[UsageParticipant],
        sessions: &[UsageSession],
        now: i64,
    ) -> Figures {
        let bucket = Bucket::new(from, to, String::new());
        figures(&[bucket], participants, sessions, now).pop().unwrap()
    }

    #[test]
    fn a_profile_gives_the_rows_figures_for_every_part_sharing_an_edge() {
        let mut random = Random(0x9e37_79b9_7f4a_7c15);
        for round in 0..60 {
            let (participants, sessions) = sessions(&mut random, 1 + round * 3);
            let now = START + LENGTH * 2;
            let profile = Profile::build(START, START + LENGTH, &participants, &sessions, now);
            let decoded = Profile::decode(&profile.encode()).expect("decodes what it encoded");
            assert_eq!(decoded, profile);
            for _ in 0..40 {
                // Cuts on whole "seconds" (where changes are) and between.
                let cut = START + 1 + random.below(LENGTH - 1);
                let cut = if random.below(2) == 0 { cut / 1000 * 1000 } else { cut };
                let cut = cut.max(START + 1);
                for (from, to) in [(cut, START + LENGTH), (START, cut), (START, START + LENGTH)] {
                    assert_eq!(
                        decoded.figures(from, to),
                        Some(from_rows(from, to, &participants, &sessions, now)),
                        "round {round}, [{from}, {to})"
                    );
                }
            }
            assert_eq!(profile.figures(START + 1, START + LENGTH - 1), None, "cut at both ends");
        }
    }

    #[test]
    fn damaged_bytes_are_no_profile() {
        let mut random = Random(7);
        let (participants, sessions) = sessions(&mut random, 50);
        let bytes = Profile::build(START, START + LENGTH, &participants, &sessions, START + 2 * LENGTH).encode();
        assert!(Profile::decode(&[]).is_none());
        assert!(Profile::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(Profile::decode(&other).is_none());
        // A count far beyond the bytes: refused, not allocated.
        let mut huge = Vec::new();
        encode_varint(VERSION, &mut huge);
        encode_varint(0, &mut huge);
        encode_varint(2, &mut huge);
        encode_varint(0, &mut huge);
        encode_varint(u64::MAX >> 2, &mut huge);
        assert!(Profile::decode(&huge).is_none());
        // Every truncation and every flipped byte: no panic.
        for cut in 0..bytes.len() {
            let _ = Profile::decode(&bytes[..cut]);
        }
        for index in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[index] ^= 0x5a;
            if let Some(profile) = Profile::decode(&flipped) {
                let (start, end) = profile.bounds();
                let _ = profile.figures(start, end);
            }
        }
    }
}
