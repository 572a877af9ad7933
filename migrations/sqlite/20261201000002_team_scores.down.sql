DROP TABLE team_scores;
