-- Accounts. Ids are UUIDv7, made by the server. `device_hash` is set only for
-- guest accounts (the SHA-256 of the device secret); named accounts have a
-- password hash instead. Usernames are unique as typed.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    password_hash text,
    device_hash   text        UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (password_hash IS NOT NULL OR device_hash IS NOT NULL)
);

CREATE TRIGGER users_updated_at BEFORE UPDATE ON users
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
