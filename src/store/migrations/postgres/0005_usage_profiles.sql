-- A cached usage bucket's profile (history::profile, varints): what
-- GetUsage needs to answer the part of the bucket a range cuts (the first
-- day of "the last 30 days") without reading its participant sessions
-- again. Kept only for buckets some range has cut; deleted with the row.
ALTER TABLE usage_cache ADD COLUMN profile BYTEA;
