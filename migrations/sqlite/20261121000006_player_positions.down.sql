DROP TABLE player_positions;
