DROP TABLE flag_captures;
