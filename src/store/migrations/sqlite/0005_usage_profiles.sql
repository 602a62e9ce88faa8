-- A cached usage bucket's profile (history::profile, varints): what
-- GetUsage needs to answer the part of the bucket a range cuts (the first
-- day of "the last 30 days") without reading its participant sessions
-- again. Kept only for buckets some range has cut; deleted with the row.
ALTER TABLE usage_cache ADD COLUMN profile BLOB;

-- Figures cached by earlier versions go: they missed a session of no
-- length at a bucket's start, and a caller without room patterns was
-- counted every room's participants. It is a cache: GetUsage computes
-- them again.
DELETE FROM usage_cache;

-- From this version room_sessions.span_start and span_end only say whether
-- a room session was computed before (span_start) and whether its name was
-- set since (span_end = -1); the projector drops the cached buckets around
-- the joins, ends and starts that moved (history::figures::changed_times).
