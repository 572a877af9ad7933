DROP TABLE IF EXISTS player_positions;
