-- Recordings (LiveKit egresses) and agent dispatches, as the timeline last
-- saw them. Written in the same transaction as the event that changed them:
-- RoomControl's recording_started / agent_dispatched actions, LiveKit's
-- egress_* webhooks, reconciliation's inferred egress_ended.
CREATE TABLE recordings (
    id           TEXT    PRIMARY KEY,
    room         TEXT    NOT NULL,
    -- roomcontrol.v1.Recording.Status.
    status       INTEGER NOT NULL,
    ended        BOOLEAN NOT NULL,
    -- Closed by reconciliation, not by LiveKit.
    end_inferred BOOLEAN NOT NULL,
    -- LiveKit's updated_at (Unix nanoseconds): an older report never
    -- overwrites a newer one.
    updated_at   INTEGER NOT NULL,
    -- Unix nanoseconds: the list's order.
    started_at   INTEGER NOT NULL,
    -- The roomcontrol.v1.Actor who started it through RoomControl.
    started_by   BLOB,
    -- The roomcontrol.v1.Recording, protobuf-encoded, without started_by.
    payload      BLOB    NOT NULL
);
CREATE INDEX recordings_by_room ON recordings (room, started_at);
CREATE INDEX recordings_open ON recordings (ended);

-- The agent dispatches made through RoomControl, for redispatch_on_failure.
CREATE TABLE agent_dispatches (
    id            TEXT    PRIMARY KEY,
    room          TEXT    NOT NULL,
    redispatch    BOOLEAN NOT NULL,
    -- How many redispatches led to this one (0 for the caller's).
    generation    INTEGER NOT NULL,
    -- Cancelled, or replaced by a redispatch: never redispatched again.
    closed        BOOLEAN NOT NULL,
    -- Unix microseconds.
    created_at    INTEGER NOT NULL,
    -- The roomcontrol.v1.AgentDispatch, protobuf-encoded.
    payload       BLOB    NOT NULL
);
CREATE INDEX agent_dispatches_by_room ON agent_dispatches (room, closed);
