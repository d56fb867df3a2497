-- Run once by each Postgres container on its first start (an empty data directory), in
-- the database POSTGRES_DB names. Every shard holds the same tables; pgshard routes each
-- row to the shard that owns its key. Matches [[tables]] in shardmap.toml.
CREATE TABLE IF NOT EXISTS accounts (
    aid bigint PRIMARY KEY,
    name text,
    balance numeric NOT NULL DEFAULT 0
);
