DROP TABLE world_objects;
