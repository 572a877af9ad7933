-- Roles and who holds them. Role names are the stable `Role::as_str` values.
CREATE TABLE roles (
    id         smallint    PRIMARY KEY,
    name       text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO roles (id, name) VALUES (1, 'player'), (2, 'admin');

CREATE TRIGGER roles_updated_at BEFORE UPDATE ON roles
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();

-- Deleting an account removes its grants; a role in use cannot be deleted.
CREATE TABLE user_roles (
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role_id    smallint    NOT NULL REFERENCES roles (id) ON DELETE RESTRICT,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, role_id)
);

CREATE INDEX user_roles_role_id ON user_roles (role_id);

CREATE TRIGGER user_roles_updated_at BEFORE UPDATE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();
