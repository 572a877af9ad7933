DROP TABLE IF EXISTS flag_captures;
