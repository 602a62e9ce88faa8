//! The webhooks LiveKit never delivered, inferred.
//!
//! LiveKit drops webhooks (a queue of 200 per room, 30 s of patience, a
//! restart), so a participant_left or room_finished may never come. Every
//! `events.reconcile_interval` this compares who the timeline says is live
//! (the store's `live_rooms` and `live_participants`) with what LiveKit
//! lists, and appends what is missing, marked `inferred`: an end for every
//! room or participant LiveKit no longer has, a start for every one it has
//! that the timeline never heard of. Something must be missing on two
//! passes in a row before it is inferred, so a webhook still on its way
//! (LiveKit retries for up to 15 s) is not overtaken.
//!
//! The inferred events' ids are derived from what they close
//! (`RC_inferred_participant_left_PA_...`): replicas reconciling at once
//! store each inference once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prost_types::Timestamp;
use serde_json::json;

use super::{Appended, Timeline, to_struct};
use crate::bans::Bans;
use crate::livekit::LiveKit;
use crate::proto::v1::{Event, EventParticipant, EventRoom, EventSource};
use crate::store::Presence;

/// Runs a pass every `interval`, forever.
pub async fn run(timeline: Timeline, livekit: Arc<LiveKit>, bans: Bans, interval: Duration) {
    let mut reconciler = Reconciler { timeline, livekit, bans, suspects: HashSet::new() };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match reconciler.pass().await {
            Ok(0) => failing = false,
            Ok(inferred) => {
                failing = false;
                tracing::info!(inferred, "reconciled the timeline with LiveKit: appended what its webhooks never said");
            }
            Err(error) => {
                // Logged once per run of failures, not once a minute.
                if !failing {
                    tracing::warn!(%error, "cannot reconcile the timeline with LiveKit; trying again each interval");
                }
                failing = true;
            }
        }
    }
}

struct Reconciler {
    timeline: Timeline,
    livekit: Arc<LiveKit>,
    /// A banned identity LiveKit still lists (its removal failed) is
    /// removed again.
    bans: Bans,
    /// What the previous pass found missing (room and participant sids,
    /// prefixed by what is missing: its start or its end).
    suspects: HashSet<String>,
}

impl Reconciler {
    /// One comparison; returns how many events it inferred.
    async fn pass(&mut self) -> Result<usize, String> {
        let live = self.timeline.store().live().await.map_err(|error| error.to_string())?;
        let rooms = self.livekit.list_rooms(Vec::new(), None).await.map_err(|error| error.to_string())?;
        let mut suspects = HashSet::new();
        let mut inferred = Vec::new();

        let livekit_rooms: HashMap<&str, &str> =
            rooms.iter().map(|room| (room.sid.as_str(), room.name.as_str())).collect();
        let timeline_rooms: HashSet<&str> = live.rooms.iter().map(|room| room.room_sid.as_str()).collect();
        for room in &live.rooms {
            if !livekit_rooms.contains_key(room.room_sid.as_str()) {
                let key = format!("end {}", room.room_sid);
                if self.suspects.contains(&key) {
                    inferred.push(room_event(
                        "room_finished",
                        &room.room,
                        &room.room_sid,
                        "LiveKit no longer lists the room; its room_finished webhook never arrived",
                    ));
                } else {
                    suspects.insert(key);
                }
            }
        }
        for room in &rooms {
            if !timeline_rooms.contains(room.sid.as_str()) {
                let key = format!("start {}", room.sid);
                if self.suspects.contains(&key) {
                    inferred.push(room_event(
                        "room_started",
                        &room.name,
                        &room.sid,
                        "LiveKit lists the room; its room_started webhook never arrived",
                    ));
                } else {
                    suspects.insert(key);
                }
            }
        }

        // Participants: LiveKit's list for every live room.
        let mut open: HashMap<&str, Vec<&crate::store::LiveParticipant>> = HashMap::new();
        for participant in &live.participants {
            open.entry(participant.room_sid.as_str()).or_default().push(participant);
        }
        let mut listed: HashSet<String> = HashSet::new();
        for room in &rooms {
            let participants = match self.livekit.list_participants(&room.name, None).await {
                Ok(participants) => participants,
                // Closed since ListRooms: its participants are gone.
                Err(crate::livekit::LiveKitError::Twirp { code: crate::livekit::TwirpCode::NotFound, .. }) => {
                    Vec::new()
                }
                Err(error) => return Err(error.to_string()),
            };
            let known: HashSet<&str> = open
                .get(room.sid.as_str())
                .map(|list| list.iter().map(|participant| participant.participant_sid.as_str()).collect())
                .unwrap_or_default();
            for participant in participants {
                listed.insert(participant.sid.clone());
                if let Some(ban) = self.bans.matching(&participant.identity, &room.name) {
                    match crate::api::bans::enforce(&self.livekit, &self.timeline, &ban, &room.name, None).await {
                        Ok(_) => {}
                        Err(error) => {
                            tracing::warn!(%error, ban = ban.id, room = room.name, identity = participant.identity, "a banned identity is still in a room and could not be removed")
                        }
                    }
                }
                // Only participants LiveKit itself calls joined (ACTIVE).
                let active = participant.state == livekit_protocol::participant_info::State::Active as i32;
                if active && !known.contains(participant.sid.as_str()) {
                    let key = format!("join {}", participant.sid);
                    if self.suspects.contains(&key) {
                        inferred.push(participant_event(
                            "participant_joined",
                            &room.name,
                            &room.sid,
                            &participant.sid,
                            &participant.identity,
                            "LiveKit lists the participant; its participant_joined webhook never arrived",
                        ));
                    } else {
                        suspects.insert(key);
                    }
                }
            }
        }
        for participant in &live.participants {
            if !listed.contains(&participant.participant_sid) {
                let key = format!("leave {}", participant.participant_sid);
                if self.suspects.contains(&key) {
                    inferred.push(participant_event(
                        "participant_left",
                        &participant.room,
                        &participant.room_sid,
                        &participant.participant_sid,
                        &participant.identity,
                        "LiveKit no longer lists the participant; its participant_left webhook never arrived",
                    ));
                } else {
                    suspects.insert(key);
                }
            }
        }
        let live_rooms: HashSet<&str> = rooms.iter().map(|room| room.name.as_str()).collect();
        inferred.extend(self.recordings(&live_rooms, &mut suspects).await?);
        self.suspects = suspects;

        let mut stored = 0;
        for (event, presence) in inferred {
            if let Appended::Stored(_) =
                self.timeline.append(event, presence).await.map_err(|error| error.to_string())?
            {
                stored += 1;
            }
        }
        Ok(stored)
    }
}

impl Reconciler {
    /// Recordings the timeline holds as running that LiveKit has ended
    /// (its egress_ended never came), or that cannot be running: their
    /// room closed while LiveKit still lists them ACTIVE (an egress worker
    /// that died, livekit/livekit#2308), or LiveKit no longer knows them.
    async fn recordings(
        &self,
        live_rooms: &HashSet<&str>,
        suspects: &mut HashSet<String>,
    ) -> Result<Vec<(Event, Presence)>, String> {
        use crate::proto::v1::recording::Status;
        let open = self.timeline.store().recordings(None, None, true, 1000).await.map_err(|error| error.to_string())?;
        if open.is_empty() {
            return Ok(Vec::new());
        }
        let active = match self.livekit.list_egress("", "", true, None).await {
            Ok(active) => active,
            // Without an egress service nothing can be told apart.
            Err(error) => {
                tracing::debug!(%error, "recordings not reconciled: LiveKit's egresses cannot be listed");
                return Ok(Vec::new());
            }
        };
        let mut inferred = Vec::new();
        for row in open {
            let Some(recording) = crate::recordings::from_row(row.started_by.as_deref(), &row.payload) else {
                continue;
            };
            let listed_active = active.iter().any(|info| info.egress_id == recording.id);
            let why = if listed_active {
                if live_rooms.contains(recording.room.as_str()) {
                    continue;
                }
                "its room closed, but LiveKit still lists the egress as running and never reported its end: its egress worker stopped without egress_ended"
            } else {
                // Ended since? LiveKit's own account of the end wins.
                match self.livekit.list_egress("", &recording.id, false, None).await {
                    Ok(found) => match found.into_iter().find(|info| info.egress_id == recording.id) {
                        Some(info) if crate::recordings::has_ended(crate::recordings::status(info.status)) => {
                            let mut ended = crate::recordings::from_egress(&info);
                            ended.started_by = recording.started_by.clone();
                            let row = crate::recordings::row(&ended, info.updated_at);
                            inferred.push(egress_event(
                                &ended,
                                "LiveKit lists the egress as ended; its egress_ended webhook never arrived",
                                row,
                            ));
                            continue;
                        }
                        Some(_) => continue,
                        None => "LiveKit no longer knows the egress (restarted?) and never reported its end",
                    },
                    Err(_) => continue,
                }
            };
            let key = format!("recording {}", recording.id);
            if !self.suspects.contains(&key) {
                suspects.insert(key);
                continue;
            }
            let ended = crate::recordings::inferred_end(recording, why);
            debug_assert_eq!(ended.status, Status::Failed as i32);
            let updated_at = crate::events::unix_micros(SystemTime::now()).saturating_mul(1000);
            let row = crate::recordings::row(&ended, updated_at);
            inferred.push(egress_event(&ended, why, row));
        }
        Ok(inferred)
    }
}

/// An inferred egress_ended: the recording as it ended.
fn egress_event(
    recording: &crate::proto::v1::Recording,
    reason: &str,
    row: crate::store::RecordingRow,
) -> (Event, Presence) {
    let mut event = inferred_event("egress_ended", &recording.room, &recording.room_sid, &recording.id, reason);
    let status = crate::proto::v1::recording::Status::try_from(recording.status)
        .map_or("STATUS_UNSPECIFIED", |status| status.as_str_name());
    let mut detail = serde_json::Map::new();
    detail.insert("reason".to_owned(), json!(reason));
    detail.insert("recordingId".to_owned(), json!(recording.id));
    detail.insert("status".to_owned(), json!(status));
    detail.insert("endInferred".to_owned(), json!(recording.end_inferred));
    event.detail = Some(to_struct(detail));
    (event, Presence::Recording(row))
}

fn inferred_event(kind: &str, room: &str, room_sid: &str, subject: &str, reason: &str) -> Event {
    let now = Timestamp::from(SystemTime::now());
    Event {
        cursor: 0,
        id: format!("RC_inferred_{kind}_{subject}"),
        r#type: kind.to_owned(),
        source: EventSource::Roomcontrol as i32,
        occurred_at: Some(now),
        received_at: Some(now),
        room: Some(EventRoom { name: room.to_owned(), sid: room_sid.to_owned() }),
        participant: None,
        track: None,
        actor: None,
        inferred: true,
        detail: match json!({ "reason": reason }) {
            serde_json::Value::Object(map) => Some(to_struct(map)),
            _ => None,
        },
    }
}

fn room_event(kind: &str, room: &str, room_sid: &str, reason: &str) -> (Event, Presence) {
    let event = inferred_event(kind, room, room_sid, room_sid, reason);
    let room = event.room.clone().unwrap_or_default();
    let presence = super::presence_of(kind, &room, None);
    (event, presence)
}

fn participant_event(
    kind: &str,
    room: &str,
    room_sid: &str,
    participant_sid: &str,
    identity: &str,
    reason: &str,
) -> (Event, Presence) {
    let mut event = inferred_event(kind, room, room_sid, participant_sid, reason);
    let participant =
        EventParticipant { identity: identity.to_owned(), sid: participant_sid.to_owned(), ..Default::default() };
    let presence = super::presence_of(kind, event.room.as_ref().unwrap_or(&EventRoom::default()), Some(&participant));
    event.participant = Some(participant);
    (event, presence)
}
