DROP TABLE IF EXISTS team_scores;
