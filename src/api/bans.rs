//! BanParticipant, UnbanParticipant, ListBans; and the removal of a banned
//! identity that joins anyway.

use std::time::{Duration, SystemTime};

use prost::Message;
use prost_types::Timestamp;
use serde_json::json;

use super::{Admitted, record_room};
use crate::bans::{self, Bans};
use crate::error::ApiError;
use crate::events::Timeline;
use crate::livekit::{LiveKit, LiveKitError};
use crate::proto::v1::*;
use crate::rpc::Rpc;
use crate::store::{NewBan, Presence};

pub async fn ban_participant(
    livekit: &LiveKit,
    bans: &Bans,
    call: Admitted<BanParticipantRequest>,
) -> Result<BanParticipantResponse, ApiError> {
    let Admitted { caller, deadline, request, audit } = call;
    record_room(&request.room);
    if bans::is_pattern(&request.room) {
        if !caller.may_touch_every_room() {
            return Err(ApiError::PermissionDenied(format!(
                "room {:?} is a pattern: a ban of many rooms needs a caller allowed every room, and {caller} may touch only {}; ban in one room by its name instead",
                request.room,
                caller.room_patterns().join(", ")
            )));
        }
    } else {
        caller.authorize_room(&request.room)?;
    }
    let now = SystemTime::now();
    let expires_at = request.duration.map(|duration| now + Duration::from_secs(duration.seconds.unsigned_abs()));
    let ban = Ban {
        id: new_ban_id(),
        room: request.room,
        identity: request.identity,
        reason: request.reason,
        created_at: Some(Timestamp::from(now)),
        expires_at: expires_at.map(Timestamp::from),
        created_by: Some(Actor { caller: caller.to_string(), rpc: Rpc::BanParticipant.name().to_owned() }),
    };
    let detail = json!({
        "banId": ban.id,
        "reason": ban.reason,
        "expiresAt": ban.expires_at.map(|at| at.to_string()),
    });
    let stored = NewBan {
        id: ban.id.clone(),
        room: ban.room.clone(),
        identity: ban.identity.clone(),
        created_at: crate::events::unix_micros(now),
        expires_at: expires_at.map(crate::events::unix_micros),
        payload: ban.encode_to_vec(),
    };
    // Stored, with its event, before anything else: from here every replica
    // refuses the identity's tokens.
    audit.require_with(Rpc::BanParticipant, &ban.room, &ban.identity, detail, Presence::Banned(stored)).await?;
    bans.insert(ban.clone()).await;
    let rooms = if bans::is_pattern(&ban.room) {
        match livekit.list_rooms(Vec::new(), deadline).await {
            Ok(rooms) => rooms.into_iter().map(|room| room.name).filter(|room| bans::applies_to(&ban, room)).collect(),
            Err(error) => {
                tracing::warn!(%error, ban = ban.id, "a ban is in force, but the live rooms could not be listed to remove its identity");
                return Ok(BanParticipantResponse {
                    ban: Some(ban),
                    removed_from: Vec::new(),
                    failed_rooms: vec!["*".to_owned()],
                });
            }
        }
    } else {
        vec![ban.room.clone()]
    };
    let mut removed_from = Vec::new();
    let mut failed_rooms = Vec::new();
    for room in rooms {
        match enforce(livekit, audit.timeline(), &ban, &room, deadline).await {
            Ok(true) => removed_from.push(room),
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(%error, ban = ban.id, room, "a ban is in force, but its identity could not be removed from a live room");
                failed_rooms.push(room);
            }
        }
    }
    Ok(BanParticipantResponse { ban: Some(ban), removed_from, failed_rooms })
}

pub async fn unban_participant(
    bans: &Bans,
    call: Admitted<UnbanParticipantRequest>,
) -> Result<UnbanParticipantResponse, ApiError> {
    let Admitted { caller, request, audit, .. } = call;
    // Another replica's ban may not have reached this one's memory yet.
    let ban = match bans.get(&request.ban_id) {
        Some(ban) => ban,
        None => {
            bans.reload().await?;
            bans.get(&request.ban_id).ok_or_else(|| ApiError::NoSuchBan(request.ban_id.clone()))?
        }
    };
    record_room(&ban.room);
    if !caller.may_touch_every_room() && (bans::is_pattern(&ban.room) || !caller.may_touch(&ban.room)) {
        return Err(ApiError::PermissionDenied(format!(
            "ban {} is of room {:?}, which {caller} may not touch",
            ban.id, ban.room
        )));
    }
    let detail = json!({ "banId": ban.id, "reason": ban.reason });
    let presence = Presence::Unbanned { ban_id: ban.id.clone() };
    audit.require_with(Rpc::UnbanParticipant, &ban.room, &ban.identity, detail, presence).await?;
    bans.remove(&ban.id).await;
    Ok(UnbanParticipantResponse {})
}

pub fn list_bans(bans: &Bans, call: Admitted<ListBansRequest>) -> ListBansResponse {
    let Admitted { caller, request, .. } = call;
    let bans = bans
        .list()
        .into_iter()
        .filter(|ban| request.identity.is_empty() || ban.identity == request.identity)
        .filter(|ban| request.room.is_empty() || bans::applies_to(ban, &request.room))
        .filter(|ban| caller.may_touch_every_room() || (!bans::is_pattern(&ban.room) && caller.may_touch(&ban.room)))
        .collect();
    ListBansResponse { bans }
}

/// Removes a banned identity from one live room and records it
/// (`ban_enforced`). `Ok(false)`: it was not there.
pub async fn enforce(
    livekit: &LiveKit,
    timeline: &Timeline,
    ban: &Ban,
    room: &str,
    deadline: Option<std::time::Instant>,
) -> Result<bool, LiveKitError> {
    match livekit.remove_participant(room, &ban.identity, deadline).await {
        Ok(()) => {}
        Err(error) if crate::error::livekit_code(&error) == tonic::Code::NotFound => return Ok(false),
        Err(error) => return Err(error),
    }
    let event = crate::events::ban_enforced(ban, room);
    if let Err(error) = timeline.append(event, Presence::Unchanged).await {
        tracing::error!(%error, ban = ban.id, room, "a banned identity was removed but the removal not recorded in the timeline");
    }
    Ok(true)
}

/// "BAN_" and 20 base62 characters (see `events::new_id`).
fn new_ban_id() -> String {
    let id = crate::events::new_id();
    format!("BAN_{}", id.trim_start_matches("RC_"))
}
