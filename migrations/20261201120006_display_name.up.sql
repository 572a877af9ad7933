-- The name other players see, when the account chose one: free text (any
-- printable characters, quotes and semicolons included), unlike the
-- username, which is a login key. NULL shows the username.
ALTER TABLE users ADD COLUMN display_name text
    CHECK (char_length(display_name) BETWEEN 1 AND 32);
