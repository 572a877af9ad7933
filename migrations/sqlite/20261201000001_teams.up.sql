-- Teams players belong to. `name` is the key the other tables refer to (a
-- profile's team, a flag's owner, a score, a capture); `position` is the
-- display order, unique so that ties in team assignment ("the first team with
-- the fewest members") always have one answer. Teams change only by migration.
CREATE TABLE teams (
    name          TEXT    PRIMARY KEY NOT NULL,
    colour        TEXT    NOT NULL CHECK (colour GLOB '#[0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F][0-9a-fA-F]'),
    position      INTEGER NOT NULL UNIQUE,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
);

INSERT INTO teams (name, colour, position, created_at_ms, updated_at_ms) VALUES
    ('red', '#e5484d', 1, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
                          CAST(strftime('%s', 'now') AS INTEGER) * 1000),
    ('blue', '#3e63dd', 2, CAST(strftime('%s', 'now') AS INTEGER) * 1000,
                           CAST(strftime('%s', 'now') AS INTEGER) * 1000);
