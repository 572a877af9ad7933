-- Teams players belong to. `name` is the key every other table refers to (a
-- profile's team, a flag's owner, a score, a capture), so that rows read well
-- and the wire can carry the name as it is. `position` is the display order,
-- unique so that ties in team assignment ("the first team with the fewest
-- members") always have one answer. Teams change only by migration.
CREATE TABLE teams (
    name       text        PRIMARY KEY,
    colour     text        NOT NULL CHECK (colour ~ '^#[0-9a-fA-F]{6}$'),
    position   smallint    NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER teams_updated_at BEFORE UPDATE ON teams
    FOR EACH ROW EXECUTE FUNCTION meridian_set_updated_at();

INSERT INTO teams (name, colour, position) VALUES
    ('red', '#e5484d', 1),
    ('blue', '#3e63dd', 2);
