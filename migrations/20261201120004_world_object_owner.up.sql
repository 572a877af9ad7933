-- The team holding an object (flags), NULL while nobody holds it. `version`
-- (already there) goes up with every capture and edit, so that a capture is a
-- conditional update on the version it was won against. Deleting a team
-- leaves its flags unowned rather than deleting them.
ALTER TABLE world_objects
    ADD COLUMN owner_team text REFERENCES teams (name) ON DELETE SET NULL;
