-- Keeps `updated_at` current on every table that has one, except
-- player_positions: the hottest table sets it in its batched upsert instead
-- of paying for a trigger per row.
CREATE FUNCTION meridian_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;
