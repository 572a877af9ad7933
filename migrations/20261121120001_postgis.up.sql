-- Geometry types, spatial indexes and functions. Needs a role allowed to
-- create extensions (a superuser, or the database owner on PostgreSQL 13+
-- where PostGIS is trusted by the installation).
CREATE EXTENSION IF NOT EXISTS postgis;
