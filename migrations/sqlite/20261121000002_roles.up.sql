-- Roles and who holds them. The role names are the stable `Role::as_str` values.
CREATE TABLE roles (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
);

INSERT INTO roles (id, name) VALUES (1, 'player'), (2, 'admin');

-- Deleting an account removes its role grants with it.
CREATE TABLE user_roles (
    user_id TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id INTEGER NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    PRIMARY KEY (user_id, role_id)
) WITHOUT ROWID;
