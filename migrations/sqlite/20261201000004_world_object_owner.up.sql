-- The team holding an object (flags), NULL while nobody holds it, and a
-- version that goes up with every capture and edit, so that a capture is a
-- conditional update on the version it was won against (the PostgreSQL table
-- has had `version` from the start). Deleting a team leaves its flags unowned.
ALTER TABLE world_objects
    ADD COLUMN owner_team TEXT REFERENCES teams (name) ON DELETE SET NULL;
ALTER TABLE world_objects ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
