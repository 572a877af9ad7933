DROP TABLE IF EXISTS player_profiles;
