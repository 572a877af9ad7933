ALTER TABLE world_objects DROP COLUMN version;
ALTER TABLE world_objects DROP COLUMN owner_team;
