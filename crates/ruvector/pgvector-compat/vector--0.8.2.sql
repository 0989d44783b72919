-- The vector type, its functions, operators and operator classes are ruvector's (required);
-- CREATE INDEX ... USING hnsw or ivfflat builds a ruhnsw index. Nothing to create here.
\echo Use "CREATE EXTENSION vector" to load this file. \quit
