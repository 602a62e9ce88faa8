-- History: room sessions and participant sessions, projected from the
-- timeline by the projector (src/history/projector.rs). Times are unix
-- microseconds. Raw facts (what each event said) are kept beside the
-- figures derived from them, and the figures of a room session are
-- recomputed from its participant sessions whenever an event touches it:
-- events arriving twice or out of order change nothing.

-- One row: every event up to projected_through is in the history. The
-- projector locks it (FOR UPDATE) in the transaction that applies the next
-- events, so replicas sharing the database never apply an event twice.
CREATE TABLE history_state (
    singleton          INTEGER PRIMARY KEY CHECK (singleton = 1),
    projected_through  BIGINT  NOT NULL,
    -- The longest participant session that ended: how far before a range
    -- a participant session that overlaps it can have started.
    longest_micros     BIGINT  NOT NULL
);
INSERT INTO history_state (singleton, projected_through, longest_micros) VALUES (1, 0, 0);

-- One per LiveKit room sid.
CREATE TABLE room_sessions (
    room_sid             TEXT    PRIMARY KEY,
    room                 TEXT    NOT NULL,
    -- room_started's time; NULL until it arrives.
    start_at             BIGINT,
    start_inferred       BOOLEAN NOT NULL DEFAULT FALSE,
    -- The earliest time any event of the session carried.
    first_seen_at        BIGINT  NOT NULL,
    -- room_finished's time; NULL while active.
    end_at               BIGINT,
    end_inferred         BOOLEAN NOT NULL DEFAULT FALSE,
    -- Derived: start_at, or first_seen_at when room_started never came.
    started_at           BIGINT  NOT NULL,
    participant_sessions BIGINT  NOT NULL DEFAULT 0,
    peak_participants    BIGINT  NOT NULL DEFAULT 0,
    unique_identities    BIGINT  NOT NULL DEFAULT 0,
    -- Of the participant sessions that ended; open ones are added when read.
    participant_micros   BIGINT  NOT NULL DEFAULT 0,
    -- Participant sessions still open.
    open_participants    BIGINT  NOT NULL DEFAULT 0,
    -- Some figure rests on an inferred event.
    inferred             BOOLEAN NOT NULL DEFAULT FALSE,
    -- The time its participant sessions span with it (NULL end: open):
    -- what a change to it invalidates in usage_cache.
    span_start           BIGINT,
    span_end             BIGINT,
    -- The cursors of the session's first and last events.
    first_cursor         BIGINT  NOT NULL,
    last_cursor          BIGINT  NOT NULL
);
CREATE INDEX room_sessions_by_start ON room_sessions (started_at, room_sid, end_at);
CREATE INDEX room_sessions_by_room ON room_sessions (room, started_at);
CREATE INDEX room_sessions_active ON room_sessions (started_at) WHERE end_at IS NULL;
CREATE INDEX room_sessions_by_end ON room_sessions (end_at);

-- One per LiveKit participant sid.
CREATE TABLE participant_sessions (
    participant_sid   TEXT    PRIMARY KEY,
    room_sid          TEXT    NOT NULL,
    room              TEXT    NOT NULL,
    identity          TEXT    NOT NULL,
    name              TEXT    NOT NULL DEFAULT '',
    kind              TEXT    NOT NULL DEFAULT '',
    -- participant_joined's time; NULL until it arrives.
    join_at           BIGINT,
    join_cursor       BIGINT,
    join_inferred     BOOLEAN NOT NULL DEFAULT FALSE,
    -- LiveKit's joinedAt from any event of the participant: the join time
    -- when participant_joined never came.
    joined_hint       BIGINT,
    -- The end: participant_left or participant_connection_aborted.
    leave_at          BIGINT,
    leave_type        TEXT,
    leave_cursor      BIGINT,
    leave_inferred    BOOLEAN NOT NULL DEFAULT FALSE,
    -- LiveKit's disconnectReason, lower case ("participant_removed").
    disconnect_reason TEXT    NOT NULL DEFAULT '',
    -- Derived by the projector.
    joined_at         BIGINT,
    left_at           BIGINT,
    -- Their places in the timeline: what orders a leave and a join stamped
    -- with the same second (LiveKit's times are whole seconds).
    joined_cursor     BIGINT  NOT NULL DEFAULT 0,
    left_cursor       BIGINT  NOT NULL DEFAULT 0,
    end_reason        TEXT    NOT NULL DEFAULT '',
    removed_by        TEXT    NOT NULL DEFAULT '',
    inferred          BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX participant_sessions_by_room ON participant_sessions (room_sid, joined_at);
CREATE INDEX participant_sessions_by_time ON participant_sessions (joined_at) INCLUDE (left_at, identity, room, room_sid, joined_cursor, left_cursor, inferred);
CREATE INDEX participant_sessions_by_room_and_time ON participant_sessions (room, joined_at) INCLUDE (left_at, identity, joined_cursor, left_cursor, inferred);
CREATE INDEX participant_sessions_open ON participant_sessions (joined_at) WHERE left_at IS NULL;

-- The tracks each participant session published.
CREATE TABLE participant_tracks (
    participant_sid TEXT    NOT NULL,
    track_sid       TEXT    NOT NULL,
    type            TEXT    NOT NULL DEFAULT '',
    source          TEXT    NOT NULL DEFAULT '',
    name            TEXT    NOT NULL DEFAULT '',
    published_at    BIGINT,
    unpublished_at  BIGINT,
    PRIMARY KEY (participant_sid, track_sid)
);

-- RoomControl's actions, each attached to the room session it happened in
-- (or the one that started soon after it: a token minted before the join
-- that created the room).
CREATE TABLE history_actions (
    event_id  TEXT    PRIMARY KEY,
    room      TEXT    NOT NULL,
    identity  TEXT    NOT NULL,
    type      TEXT    NOT NULL,
    actor     TEXT    NOT NULL,
    at        BIGINT  NOT NULL,
    -- Its place in the timeline.
    cursor    BIGINT  NOT NULL,
    room_sid  TEXT
);
CREATE INDEX history_actions_by_room ON history_actions (room, at);
CREATE INDEX history_actions_by_session ON history_actions (room_sid);

-- GetUsage's figures of buckets that ended, by the rooms asked for (a hash
-- of the rooms filter and the caller's patterns) and the bucket's bounds
-- (whatever its zone). The projector deletes every bucket a changed room
-- session overlaps; a reply stores its buckets only if no projection
-- committed since it read its rows.
CREATE TABLE usage_cache (
    rooms_key          TEXT    NOT NULL,
    bucket_start       BIGINT  NOT NULL,
    bucket_end         BIGINT  NOT NULL,
    sessions           BIGINT  NOT NULL,
    participant_micros BIGINT  NOT NULL,
    peak_concurrency   BIGINT  NOT NULL,
    unique_identities  BIGINT  NOT NULL,
    inferred           BOOLEAN NOT NULL,
    PRIMARY KEY (rooms_key, bucket_start, bucket_end)
);
CREATE INDEX usage_cache_by_end ON usage_cache (bucket_end);
