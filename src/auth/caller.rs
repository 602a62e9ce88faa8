//! Who is calling and what it may do: scopes, room patterns, the caller.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use crate::error::ApiError;
use crate::rpc::Rpc;

/// What a caller may do, per group of RPCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// ListRooms, GetRoom, ListParticipants, GetParticipant.
    RoomsRead,
    /// CreateRoom, UpdateRoomMetadata, DeleteRoom.
    RoomsWrite,
    /// RemoveParticipant, UpdateParticipant, MutePublishedTrack,
    /// UpdateSubscriptions, SendData.
    ParticipantsModerate,
    /// CreateToken for any identity.
    TokensCreate,
    /// CreateToken for the caller's own identity, within the self-service
    /// policy.
    TokensCreateSelf,
    /// ListEvents, WatchEvents.
    EventsRead,
    /// BanParticipant, UnbanParticipant, ListBans. Apart from
    /// participants:moderate: a ban outlives the call, holds in every
    /// matching room and refuses tokens, so it is granted on its own.
    ParticipantsBan,
    /// StartRoomRecording, StartTrackRecording, StartParticipantRecording,
    /// StartStream, StopRecording, and ListRecordings.
    RecordingsWrite,
    /// ListRecordings.
    RecordingsRead,
    /// DispatchAgent, ListAgentDispatches, CancelAgentDispatch, and
    /// CreateRoom with agents.
    AgentsDispatch,
    /// ListRoomSessions, GetRoomSession, GetUsage.
    HistoryRead,
}

impl Scope {
    pub const ALL: [Scope; 11] = [
        Scope::RoomsRead,
        Scope::RoomsWrite,
        Scope::ParticipantsModerate,
        Scope::TokensCreate,
        Scope::TokensCreateSelf,
        Scope::EventsRead,
        Scope::ParticipantsBan,
        Scope::RecordingsWrite,
        Scope::RecordingsRead,
        Scope::AgentsDispatch,
        Scope::HistoryRead,
    ];

    /// The scope's name in credentials and configuration.
    pub fn name(self) -> &'static str {
        match self {
            Scope::RoomsRead => "rooms:read",
            Scope::RoomsWrite => "rooms:write",
            Scope::ParticipantsModerate => "participants:moderate",
            Scope::TokensCreate => "tokens:create",
            Scope::TokensCreateSelf => "tokens:create:self",
            Scope::EventsRead => "events:read",
            Scope::ParticipantsBan => "participants:ban",
            Scope::RecordingsWrite => "recordings:write",
            Scope::RecordingsRead => "recordings:read",
            Scope::AgentsDispatch => "agents:dispatch",
            Scope::HistoryRead => "history:read",
        }
    }

    pub fn from_name(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.name() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Room name patterns: `*` matches any run of characters, everything else
/// itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPatterns(Vec<String>);

impl RoomPatterns {
    pub fn new(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    /// Every room.
    pub fn any() -> Self {
        Self(vec!["*".to_owned()])
    }

    pub fn allows(&self, room: &str) -> bool {
        self.0.iter().any(|pattern| wildcard_match(pattern, room))
    }

    pub fn patterns(&self) -> &[String] {
        &self.0
    }
}

/// `*` matches any run of characters (including none).
fn wildcard_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Who is calling, and what it may do.
#[derive(Debug, Clone)]
pub struct Caller {
    pub(super) kind: CallerKind,
    /// The identity a self-service token gets: the JWT's `sub`, or the API
    /// key's name.
    pub(super) subject: String,
    /// A display name from the credential (the JWT's `name` claim).
    pub(super) display_name: Option<String>,
    pub(super) scopes: BTreeSet<Scope>,
    pub(super) rooms: RoomPatterns,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallerKind {
    /// Authentication is off.
    Anonymous,
    ApiKey {
        name: String,
    },
    Jwt {
        issuer: String,
    },
}

impl Caller {
    /// The caller when authentication is off: every scope, every room.
    pub fn anonymous() -> Self {
        Self {
            kind: CallerKind::Anonymous,
            subject: "anonymous".to_owned(),
            display_name: None,
            scopes: Scope::ALL.into_iter().collect(),
            rooms: RoomPatterns::any(),
        }
    }

    /// Who the caller is for its rate limits (`crate::limits`): the API
    /// key's name, the JWT's issuer and subject (hashed: bounded and
    /// printable, whatever the provider's values), or the one anonymous
    /// caller when authentication is off.
    pub fn limit_key(&self) -> String {
        use sha2::Digest;
        match &self.kind {
            CallerKind::Anonymous => "anonymous".to_owned(),
            CallerKind::ApiKey { name } => format!("key:{name}"),
            CallerKind::Jwt { issuer } => {
                let mut hasher = sha2::Sha256::new();
                hasher.update(issuer.as_bytes());
                hasher.update([0]);
                hasher.update(self.subject.as_bytes());
                let digest = hasher.finalize();
                let mut key = String::with_capacity(4 + 32);
                key.push_str("jwt:");
                for byte in &digest[..16] {
                    let _ = write!(key, "{byte:02x}");
                }
                key
            }
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub fn display_name(&self) -> Option<&str> {
        self.display_name.as_deref()
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope)
    }

    /// The room patterns the caller's credential allows.
    pub fn room_patterns(&self) -> &[String] {
        self.rooms.patterns()
    }

    /// Whether the caller may touch every room (its patterns include `*`).
    pub fn may_touch_every_room(&self) -> bool {
        self.rooms.patterns().iter().any(|pattern| pattern == "*")
    }

    pub fn may_touch(&self, room: &str) -> bool {
        self.rooms.allows(room)
    }

    /// PERMISSION_DENIED unless the caller holds one of `rpc`'s scopes
    /// (and, when given, may touch `room`). The message names the rule
    /// that failed.
    pub fn authorize(&self, rpc: Rpc, room: Option<&str>) -> Result<(), ApiError> {
        let scopes = rpc.info().scopes;
        if !scopes.iter().any(|scope| self.has(*scope)) {
            let needed = scopes.iter().map(|scope| scope.name()).collect::<Vec<_>>().join(" or ");
            return Err(ApiError::PermissionDenied(format!(
                "{rpc} needs scope {needed}; {self} has {}",
                self.scope_list()
            )));
        }
        if let Some(room) = room {
            self.authorize_room(room)?;
        }
        Ok(())
    }

    /// PERMISSION_DENIED unless the caller may touch `room`.
    pub fn authorize_room(&self, room: &str) -> Result<(), ApiError> {
        if self.may_touch(room) {
            return Ok(());
        }
        Err(ApiError::PermissionDenied(format!(
            "room {room:?} is not among the rooms {self} may touch ({})",
            self.rooms.patterns().join(", ")
        )))
    }

    /// The caller's scopes, for messages: "rooms:read tokens:create" or "no scope".
    pub fn scope_list(&self) -> String {
        if self.scopes.is_empty() {
            return "no scope".to_owned();
        }
        self.scopes.iter().map(|scope| scope.name()).collect::<Vec<_>>().join(" ")
    }
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            CallerKind::Anonymous => f.write_str("the anonymous caller"),
            CallerKind::ApiKey { name } => write!(f, "API key {name:?}"),
            CallerKind::Jwt { issuer } => write!(f, "{:?} (issuer {issuer})", self.subject),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_any_run_of_characters() {
        let cases = [
            ("*", "anything", true),
            ("*", "", true),
            ("standup", "standup", true),
            ("standup", "standup-2", false),
            ("team-a-*", "team-a-standup", true),
            ("team-a-*", "team-b-standup", false),
            ("*-standup", "team-a-standup", true),
            ("*-standup", "team-a-standup-2", false),
            ("a*b*c", "a-x-b-y-c", true),
            ("a*b*c", "a-x-c-y-b", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
        ];
        for (pattern, room, expected) in cases {
            assert_eq!(wildcard_match(pattern, room), expected, "{pattern:?} vs {room:?}");
        }
    }

    #[test]
    fn limit_keys_tell_callers_apart() {
        let caller = |kind, subject: &str| Caller {
            kind,
            subject: subject.to_owned(),
            display_name: None,
            scopes: BTreeSet::new(),
            rooms: RoomPatterns::any(),
        };
        let jwt = |issuer: &str, subject| caller(CallerKind::Jwt { issuer: issuer.to_owned() }, subject);
        assert_eq!(Caller::anonymous().limit_key(), "anonymous");
        assert_eq!(caller(CallerKind::ApiKey { name: "billing".into() }, "billing").limit_key(), "key:billing");
        let alice = jwt("https://a.example/", "alice").limit_key();
        assert!(alice.starts_with("jwt:") && alice.len() == 36, "{alice}");
        assert_eq!(alice, jwt("https://a.example/", "alice").limit_key());
        assert_ne!(alice, jwt("https://a.example/", "bob").limit_key());
        assert_ne!(alice, jwt("https://b.example/", "alice").limit_key());
        // The separator keeps issuer and subject from running together.
        assert_ne!(jwt("ab", "c").limit_key(), jwt("a", "bc").limit_key());
    }

    #[test]
    fn scope_names_round_trip() {
        for scope in Scope::ALL {
            assert_eq!(Scope::from_name(scope.name()), Some(scope));
        }
        assert_eq!(Scope::from_name("rooms:admin"), None);
    }

    #[test]
    fn messages_name_the_missing_scope_and_the_room_rule() {
        let caller = Caller {
            kind: CallerKind::ApiKey { name: "backend".into() },
            subject: "backend".into(),
            display_name: None,
            scopes: [Scope::RoomsRead].into_iter().collect(),
            rooms: RoomPatterns::new(vec!["team-a-*".into()]),
        };
        let denied = caller.authorize(Rpc::DeleteRoom, Some("team-a-x")).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: DeleteRoom needs scope rooms:write; API key \"backend\" has rooms:read"
        );
        let denied = caller.authorize(Rpc::GetRoom, Some("team-b-x")).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "permission denied: room \"team-b-x\" is not among the rooms API key \"backend\" may touch (team-a-*)"
        );
        assert!(caller.authorize(Rpc::GetRoom, Some("team-a-x")).is_ok());
    }
}
