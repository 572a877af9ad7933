-- Accounts. Ids are UUIDv7 as hyphenated text, timestamps Unix milliseconds.
-- `device_hash` is set only for guest accounts; SQLite's UNIQUE lets any number
-- of named accounts keep it NULL.
CREATE TABLE users (
    id            TEXT    PRIMARY KEY NOT NULL,
    username      TEXT    NOT NULL UNIQUE,
    password_hash TEXT,
    device_hash   TEXT    UNIQUE,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);
