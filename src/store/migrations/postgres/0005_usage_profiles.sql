-- A cached usage bucket's profile (history::profile, varints): what
-- GetUsage needs to answer the part of the bucket a range cuts (the first
-- day of "the last 30 days") without reading its participant sessions
-- again. Kept only for buckets some range has cut; deleted with the row.
ALTER TABLE usage_cache ADD COLUMN profile BYTEA;

-- Figures cached by earlier versions go: they missed a session of no
-- length at a bucket's start, and a caller without room patterns was
-- counted every room's participants. It is a cache: GetUsage computes
-- them again.
DELETE FROM usage_cache;
