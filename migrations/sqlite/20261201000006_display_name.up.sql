-- The name other players see, when the account chose one (see the PostgreSQL
-- migration of the same name). NULL shows the username.
ALTER TABLE users ADD COLUMN display_name TEXT
    CHECK (length(display_name) BETWEEN 1 AND 32);
