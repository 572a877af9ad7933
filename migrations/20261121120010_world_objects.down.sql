DROP TABLE IF EXISTS world_objects;
