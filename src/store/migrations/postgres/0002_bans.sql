-- Bans: an identity kept out of a room, of the rooms a pattern matches, or
-- of every room ("*"). Written in the same transaction as the timeline's
-- participant_banned / participant_unbanned event.
CREATE TABLE bans (
    id         TEXT    PRIMARY KEY,
    room       TEXT    NOT NULL,
    identity   TEXT    NOT NULL,
    -- Unix microseconds.
    created_at BIGINT  NOT NULL,
    -- NULL: until lifted.
    expires_at BIGINT,
    lifted_at  BIGINT,
    -- The roomcontrol.v1.Ban, protobuf-encoded.
    payload    BYTEA   NOT NULL
);
CREATE INDEX bans_in_force ON bans (lifted_at, expires_at);
