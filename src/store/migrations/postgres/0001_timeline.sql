-- The timeline: LiveKit's webhooks and RoomControl's own actions, in the
-- store's order. `cursor` is that order; an identity column never gives a cursor
-- twice, even after the pruner deleted the newest rows.
CREATE TABLE events (
    cursor      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- LiveKit's webhook id (EV_...) or RoomControl's own (RC_...).
    id          TEXT    NOT NULL UNIQUE,
    type        TEXT    NOT NULL,
    room        TEXT    NOT NULL,
    -- Unix microseconds.
    received_at BIGINT  NOT NULL,
    -- The roomcontrol.v1.Event, protobuf-encoded, cursor unset.
    payload     BYTEA   NOT NULL
);
CREATE INDEX events_by_room ON events (room, cursor);
CREATE INDEX events_by_type ON events (type, cursor);
CREATE INDEX events_by_received_at ON events (received_at);

-- One row: every event up to pruned_through was pruned.
CREATE TABLE timeline_state (
    singleton      INTEGER PRIMARY KEY CHECK (singleton = 1),
    pruned_through BIGINT  NOT NULL
);
INSERT INTO timeline_state (singleton, pruned_through) VALUES (1, 0);

-- Who is live by the timeline's account: rooms started and not finished,
-- participants joined and not gone. Reconciliation compares them with
-- LiveKit's answers.
CREATE TABLE live_rooms (
    room_sid   TEXT    PRIMARY KEY,
    room       TEXT    NOT NULL,
    started_at BIGINT  NOT NULL
);
CREATE TABLE live_participants (
    participant_sid TEXT    PRIMARY KEY,
    room_sid        TEXT    NOT NULL,
    room            TEXT    NOT NULL,
    identity        TEXT    NOT NULL,
    joined_at       BIGINT  NOT NULL
);
CREATE INDEX live_participants_by_room ON live_participants (room_sid);

-- Rooms and participants that ended: an end that arrives before its start
-- keeps the late start from opening them again.
CREATE TABLE ended (
    sid      TEXT    PRIMARY KEY,
    ended_at BIGINT  NOT NULL
);
CREATE INDEX ended_by_ended_at ON ended (ended_at);
