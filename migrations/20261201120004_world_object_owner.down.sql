ALTER TABLE world_objects DROP COLUMN IF EXISTS owner_team;
