//! A room session's figures, computed from its participant sessions as
//! recorded: whatever order their events came in, the same facts give the
//! same figures. Pure functions, tested here.

use std::collections::HashSet;

/// A removal and a leave this close together are one thing; an action
/// this long after its room session's end still belongs to it.
pub const REMOVAL_WINDOW_MICROS: i64 = 30 * 1_000_000;

/// What the timeline said about one participant session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ParticipantFacts {
    pub sid: String,
    pub identity: String,
    /// participant_joined's time.
    pub join_at: Option<i64>,
    pub join_inferred: bool,
    /// participant_joined's cursor.
    pub join_cursor: Option<i64>,
    /// LiveKit's joinedAt, from any of its events.
    pub joined_hint: Option<i64>,
    /// participant_left's or participant_connection_aborted's time.
    pub leave_at: Option<i64>,
    /// Which of the two; empty without a leave.
    pub leave_type: String,
    pub leave_inferred: bool,
    pub leave_cursor: Option<i64>,
    /// LiveKit's disconnectReason, lower case.
    pub disconnect_reason: String,
}

/// One of RoomControl's actions that ends participant sessions:
/// participant_removed, ban_enforced (for an identity) or room_deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalAction {
    pub identity: String,
    pub kind: String,
    pub actor: String,
    pub at: i64,
}

/// A participant session's derived columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    pub sid: String,
    pub joined_at: Option<i64>,
    /// `None`: still connected.
    pub left_at: Option<i64>,
    /// left, removed, connection_aborted, room_deleted, inferred; empty
    /// while connected.
    pub end_reason: String,
    pub removed_by: String,
    /// Its join or its end was inferred.
    pub inferred: bool,
    /// The timeline's order of its join and its end, which orders what
    /// LiveKit stamped with the same second (0: before the rest of its
    /// second; i64::MAX: after).
    pub joined_cursor: i64,
    pub left_cursor: i64,
}

/// A room session's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    pub participant_sessions: i64,
    /// Most participant sessions open at once.
    pub peak: i64,
    pub unique_identities: i64,
    /// Microseconds of the participant sessions that ended.
    pub closed_micros: i64,
    /// Participant sessions still open.
    pub open: i64,
    /// Some participant session's join or end was inferred.
    pub inferred: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub participants: Vec<Derived>,
    pub totals: Totals,
}

/// The nearest action of one of `kinds` (for `identity`, when given) within
/// the removal window of `at`.
fn nearest<'a>(
    actions: &'a [RemovalAction],
    kinds: &[&str],
    identity: Option<&str>,
    at: i64,
) -> Option<&'a RemovalAction> {
    actions
        .iter()
        .filter(|action| kinds.contains(&action.kind.as_str()))
        .filter(|action| identity.is_none_or(|identity| action.identity == identity))
        .filter(|action| (action.at - at).abs() <= REMOVAL_WINDOW_MICROS)
        .min_by_key(|action| (action.at - at).abs())
}

/// Derives every participant session and the room session's figures.
/// `room_end`: when the room session ended, if it did.
pub fn derive(facts: &[ParticipantFacts], room_end: Option<i64>, actions: &[RemovalAction]) -> Figures {
    let mut participants = Vec::with_capacity(facts.len());
    for fact in facts {
        let joined_at = fact.join_at.or(fact.joined_hint);
        let mut inferred = fact.join_inferred || (fact.join_at.is_none() && joined_at.is_some());
        let mut removed_by = String::new();
        let mut left_cursor = fact.leave_cursor.unwrap_or(0);
        let (left_at, end_reason) = match (fact.leave_at, room_end) {
            (Some(leave_at), _) => {
                let removal =
                    || nearest(actions, &["participant_removed", "ban_enforced"], Some(&fact.identity), leave_at);
                let reason = if fact.leave_type == "participant_connection_aborted" {
                    "connection_aborted"
                } else if fact.leave_inferred {
                    inferred = true;
                    "inferred"
                } else {
                    // LiveKit says why (disconnectReason); RoomControl's
                    // actions say who. Without a reason (older servers),
                    // an action close to the leave explains it.
                    match fact.disconnect_reason.as_str() {
                        "participant_removed" => {
                            removed_by = removal().map(|action| action.actor.clone()).unwrap_or_default();
                            "removed"
                        }
                        "room_deleted" => "room_deleted",
                        "" | "unknown_reason" => {
                            if let Some(action) = removal() {
                                removed_by = action.actor.clone();
                                "removed"
                            } else if nearest(actions, &["room_deleted"], None, leave_at).is_some() {
                                "room_deleted"
                            } else {
                                "left"
                            }
                        }
                        _ => "left",
                    }
                };
                (Some(leave_at), reason)
            }
            // The room ended and the leave never came.
            (None, Some(end)) => {
                inferred = true;
                left_cursor = i64::MAX;
                let reason =
                    if nearest(actions, &["room_deleted"], None, end).is_some() { "room_deleted" } else { "inferred" };
                (Some(end), reason)
            }
            (None, None) => (None, ""),
        };
        // A leave stamped before its join (clocks in whole seconds): zero long.
        let left_at = match (joined_at, left_at) {
            (Some(joined), Some(left)) => Some(left.max(joined)),
            (_, left) => left,
        };
        participants.push(Derived {
            sid: fact.sid.clone(),
            joined_at,
            left_at,
            end_reason: end_reason.to_owned(),
            removed_by,
            inferred,
            joined_cursor: fact.join_cursor.unwrap_or(0),
            left_cursor,
        });
    }
    let totals = totals(&participants, facts);
    Figures { participants, totals }
}

fn totals(participants: &[Derived], facts: &[ParticipantFacts]) -> Totals {
    let mut totals = Totals { participant_sessions: participants.len() as i64, ..Totals::default() };
    let mut identities = HashSet::new();
    // (time, cursor, change): within one second, the timeline's order.
    let mut changes = Vec::with_capacity(participants.len() * 2);
    for (session, fact) in participants.iter().zip(facts) {
        let Some(joined) = session.joined_at else {
            continue;
        };
        identities.insert(fact.identity.as_str());
        totals.inferred |= session.inferred;
        changes.push((joined, session.joined_cursor, 1i64));
        match session.left_at {
            Some(left) => {
                totals.closed_micros = totals.closed_micros.saturating_add(left - joined);
                changes.push((left, session.left_cursor, -1));
            }
            None => totals.open += 1,
        }
    }
    totals.unique_identities = identities.len() as i64;
    totals.peak = peak(&mut changes);
    totals
}

/// The highest running sum of changes (time, cursor, +1 or -1), in order;
/// at one time and cursor, ends before starts.
pub fn peak(changes: &mut [(i64, i64, i64)]) -> i64 {
    changes.sort_unstable();
    let (mut now, mut most) = (0i64, 0i64);
    for (_, _, change) in changes.iter() {
        now += change;
        most = most.max(now);
    }
    most
}

/// A participant session's derived columns as stored before a recompute,
/// as far as usage figures read them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub joined_at: Option<i64>,
    pub left_at: Option<i64>,
    pub inferred: bool,
    /// [`IDENTITY_CHANGED`] when the participant's identity changed since.
    pub joined_cursor: i64,
    pub left_cursor: i64,
}

/// The `joined_cursor` the projector stores when an event changes a
/// participant session's identity (no derived cursor is negative): every
/// bucket it was counted in changes.
pub const IDENTITY_CHANGED: i64 = -1;

/// The times (closed ranges, `None`: open-ended) where usage figures may
/// differ after a participant session changed from `old` (`None`: not
/// counted before) to `new`: around a join or an end that moved, or the
/// whole of both when what counts in every bucket changed (its identity,
/// its inferred mark). Empty when nothing usage reads changed.
pub fn changed_times(old: Option<Counted>, new: &Derived) -> Vec<(i64, Option<i64>)> {
    let Some(new_joined) = new.joined_at else {
        // Not counted now: where it was counted, if it was.
        return match old {
            Some(Counted { joined_at: Some(joined), left_at, .. }) => vec![(joined, left_at)],
            _ => Vec::new(),
        };
    };
    let Some(old) = old.filter(|old| old.joined_at.is_some()) else {
        return vec![(new_joined, new.left_at)];
    };
    let old_joined = old.joined_at.unwrap_or(new_joined);
    // A later end of None (still open) is the later of the two.
    let later = |a: Option<i64>, b: Option<i64>| a.zip(b).map(|(a, b)| a.max(b));
    if old.joined_cursor == IDENTITY_CHANGED || old.inferred != new.inferred {
        return vec![(old_joined.min(new_joined), later(old.left_at, new.left_at))];
    }
    let mut times = Vec::new();
    if (old_joined, old.joined_cursor) != (new_joined, new.joined_cursor) {
        times.push((old_joined.min(new_joined), Some(old_joined.max(new_joined))));
    }
    if (old.left_at, old.left_cursor) != (new.left_at, new.left_cursor) {
        match (old.left_at, new.left_at) {
            (Some(a), Some(b)) => times.push((a.min(b), Some(a.max(b)))),
            (Some(at), None) | (None, Some(at)) => times.push((at, None)),
            (None, None) => {}
        }
    }
    times
}

/// Merges closed ranges that overlap or touch.
pub fn merge_times(mut times: Vec<(i64, Option<i64>)>) -> Vec<(i64, Option<i64>)> {
    times.sort_unstable_by_key(|&(low, _)| low);
    let mut merged: Vec<(i64, Option<i64>)> = Vec::with_capacity(times.len());
    for (low, high) in times {
        if let Some(last) = merged.last_mut()
            && last.1.is_none_or(|last_high| low <= last_high)
        {
            last.1 = last.1.zip(high).map(|(a, b)| a.max(b));
            continue;
        }
        merged.push((low, high));
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(sid: &str, identity: &str, join: Option<i64>, leave: Option<i64>) -> ParticipantFacts {
        ParticipantFacts {
            sid: sid.into(),
            identity: identity.into(),
            join_at: join,
            leave_at: leave,
            leave_type: if leave.is_some() { "participant_left".into() } else { String::new() },
            ..Default::default()
        }
    }

    #[test]
    fn figures_come_from_intervals_whatever_their_order() {
        let facts = vec![
            fact("PA_a", "alice", Some(0), Some(600)),
            fact("PA_b", "bob", Some(100), Some(200)),
            fact("PA_c", "alice", Some(200), Some(300)),
            fact("PA_d", "carol", Some(650), None),
        ];
        let mut reversed = facts.clone();
        reversed.reverse();
        for facts in [facts, reversed] {
            let figures = derive(&facts, None, &[]);
            assert_eq!(
                figures.totals,
                Totals {
                    participant_sessions: 4,
                    // bob leaves at 200 as alice's second session joins.
                    peak: 2,
                    unique_identities: 3,
                    closed_micros: 600 + 100 + 100,
                    open: 1,
                    inferred: false,
                }
            );
        }
    }

    #[test]
    fn within_one_second_the_timelines_order_decides_who_overlapped() {
        // A reconnect: the old session's leave, then the new join, stamped
        // with the same second; then two joins and two leaves in one second.
        let mut old = fact("PA_a1", "alice", Some(0), Some(5));
        (old.join_cursor, old.leave_cursor) = (Some(1), Some(2));
        let mut new = fact("PA_a2", "alice", Some(5), Some(9));
        (new.join_cursor, new.leave_cursor) = (Some(3), Some(8));
        assert_eq!(derive(&[old, new], None, &[]).totals.peak, 1);
        let mut bob = fact("PA_b", "bob", Some(7), Some(7));
        (bob.join_cursor, bob.leave_cursor) = (Some(4), Some(7));
        let mut carol = fact("PA_c", "carol", Some(7), Some(7));
        (carol.join_cursor, carol.leave_cursor) = (Some(5), Some(6));
        assert_eq!(derive(&[bob, carol], None, &[]).totals.peak, 2);
    }

    #[test]
    fn a_leave_before_its_join_is_known_counts_from_livekits_joined_at_and_is_marked() {
        let mut early = fact("PA_a", "alice", None, Some(500));
        early.joined_hint = Some(100);
        let figures = derive(&[early.clone()], None, &[]);
        assert_eq!(figures.participants[0].joined_at, Some(100));
        assert!(figures.participants[0].inferred);
        // The join arrives: exact, and no longer inferred.
        early.join_at = Some(120);
        let figures = derive(&[early], None, &[]);
        assert_eq!((figures.participants[0].joined_at, figures.participants[0].inferred), (Some(120), false));
        assert_eq!(figures.totals.closed_micros, 380);
    }

    #[test]
    fn end_reasons_name_who_removed_and_what_was_inferred() {
        let second = 1_000_000;
        let actions = vec![
            RemovalAction {
                identity: "bob".into(),
                kind: "participant_removed".into(),
                actor: "API key \"ops\"".into(),
                at: 50 * second,
            },
            RemovalAction {
                identity: String::new(),
                kind: "room_deleted".into(),
                actor: "anonymous".into(),
                at: 500 * second,
            },
        ];
        let mut aborted = fact("PA_c", "carol", Some(0), Some(10 * second));
        aborted.leave_type = "participant_connection_aborted".into();
        let mut inferred = fact("PA_d", "dave", Some(0), Some(20 * second));
        inferred.leave_inferred = true;
        let facts = vec![
            fact("PA_a", "alice", Some(0), Some(5 * second)),
            fact("PA_b", "bob", Some(0), Some(49 * second)),
            aborted,
            inferred,
            fact("PA_e", "erin", Some(0), Some(501 * second)),
            fact("PA_f", "frank", Some(0), None),
        ];
        let figures = derive(&facts, Some(502 * second), &actions);
        let reasons: Vec<(&str, &str, bool)> =
            figures.participants.iter().map(|p| (p.end_reason.as_str(), p.removed_by.as_str(), p.inferred)).collect();
        assert_eq!(
            reasons,
            [
                ("left", "", false),
                ("removed", "API key \"ops\"", false),
                ("connection_aborted", "", false),
                ("inferred", "", true),
                ("room_deleted", "", false),
                ("room_deleted", "", true),
            ]
        );
        assert_eq!(figures.participants[5].left_at, Some(502 * second));
        assert!(figures.totals.inferred);
        // LiveKit's own reason wins over an action nearby.
        let mut left = fact("PA_g", "bob", Some(0), Some(49 * second));
        left.disconnect_reason = "client_initiated".into();
        let mut removed = fact("PA_h", "bob", Some(0), Some(49 * second));
        removed.disconnect_reason = "participant_removed".into();
        let figures = derive(&[left, removed], None, &actions);
        assert_eq!(figures.participants[0].end_reason, "left");
        assert_eq!(
            (figures.participants[1].end_reason.as_str(), figures.participants[1].removed_by.as_str()),
            ("removed", "API key \"ops\"")
        );
    }

    fn derived(joined: Option<i64>, left: Option<i64>) -> Derived {
        Derived {
            sid: "PA".into(),
            joined_at: joined,
            left_at: left,
            end_reason: String::new(),
            removed_by: String::new(),
            inferred: false,
            joined_cursor: 1,
            left_cursor: 2,
        }
    }

    fn counted(joined: Option<i64>, left: Option<i64>) -> Counted {
        Counted { joined_at: joined, left_at: left, inferred: false, joined_cursor: 1, left_cursor: 2 }
    }

    #[test]
    fn only_the_times_around_what_moved_change_usage() {
        // Unchanged: nothing.
        assert_eq!(changed_times(Some(counted(Some(10), Some(50))), &derived(Some(10), Some(50))), []);
        // New: its whole interval; still open: open-ended.
        assert_eq!(changed_times(None, &derived(Some(10), None)), [(10, None)]);
        assert_eq!(changed_times(Some(counted(None, None)), &derived(Some(10), Some(20))), [(10, Some(20))]);
        // A leave for an open session: from the leave on, not from its join.
        assert_eq!(changed_times(Some(counted(Some(10), None)), &derived(Some(10), Some(500))), [(500, None)]);
        // A late join earlier than the hint: between the two.
        assert_eq!(changed_times(Some(counted(Some(30), Some(500))), &derived(Some(20), Some(500))), [(20, Some(30))]);
        // Same times, another order within the instant: that instant.
        let mut reordered = derived(Some(10), Some(500));
        reordered.left_cursor = 9;
        assert_eq!(changed_times(Some(counted(Some(10), Some(500))), &reordered), [(500, Some(500))]);
        // The identity or the inferred mark: everywhere it counted.
        let mut renamed = counted(Some(10), Some(500));
        renamed.joined_cursor = IDENTITY_CHANGED;
        assert_eq!(changed_times(Some(renamed), &derived(Some(10), Some(400))), [(10, Some(500))]);
        let mut inferred = derived(Some(10), None);
        inferred.inferred = true;
        assert_eq!(changed_times(Some(counted(Some(10), Some(500))), &inferred), [(10, None)]);
        // No longer counted: where it was.
        assert_eq!(changed_times(Some(counted(Some(10), Some(20))), &derived(None, Some(20))), [(10, Some(20))]);
    }

    #[test]
    fn touching_ranges_merge_and_open_ones_swallow_the_rest() {
        assert_eq!(
            merge_times(vec![(50, Some(60)), (10, Some(20)), (20, Some(30)), (70, Some(70))]),
            [(10, Some(30)), (50, Some(60)), (70, Some(70))]
        );
        assert_eq!(merge_times(vec![(40, None), (10, Some(20)), (50, Some(90))]), [(10, Some(20)), (40, None)]);
        assert_eq!(merge_times(Vec::new()), []);
    }
}
