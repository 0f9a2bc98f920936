-- Nothing changes on SQLite; the version exists so both stores carry the same ones. On
-- Postgres the links moved from foreign keys to triggers that skip a row naming no job (see
-- migrations/postgres). SQLite's foreign keys stay: its check of a NULL link ends before any
-- lookup, and the store already clears links itself before a retention delete (0008).
SELECT 1;
