DROP FUNCTION IF EXISTS meridian_set_updated_at();
