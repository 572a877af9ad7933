DROP TABLE player_profiles;
