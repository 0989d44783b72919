-- ruhnsw: the index access method, its operator classes, options and errors.
SET client_min_messages = warning;
CREATE TABLE hnsw_items (id int PRIMARY KEY, v vector(3));
-- Deterministic points on a spiral, plus a NULL vector (not indexed).
INSERT INTO hnsw_items
SELECT i, ARRAY[cos(i * 0.1) * i, sin(i * 0.1) * i, i * 0.5]::real[]::vector
FROM generate_series(1, 500) i;
INSERT INTO hnsw_items VALUES (0, NULL);

-- Every operator class: the index answers like a sequential scan on this small table, through
-- its graph (exact_threshold = 0: below the threshold a search is an exact scan instead).
CREATE INDEX hnsw_l2 ON hnsw_items USING ruhnsw (v) WITH (exact_threshold = 0);
CREATE INDEX hnsw_cos ON hnsw_items USING ruhnsw (v vector_cosine_ops) WITH (exact_threshold = 0);
CREATE INDEX hnsw_ip ON hnsw_items USING ruhnsw (v vector_ip_ops) WITH (exact_threshold = 0);
CREATE INDEX hnsw_l1 ON hnsw_items USING ruhnsw (v vector_l1_ops) WITH (m = 8, ef_construction = 32, exact_threshold = 0);
SELECT c.relname, a.amname, c.reloptions FROM pg_class c JOIN pg_am a ON a.oid = c.relam
WHERE c.relname LIKE 'hnsw_%' AND c.relkind = 'i' AND a.amname = 'ruhnsw' ORDER BY 1;

-- (A sequential scan is cheaper on 500 rows; the end-to-end tests check the planner's
-- choice on large tables.)
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_items ORDER BY v <-> '[10,10,10]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_items ORDER BY v <=> '[10,10,10]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_items ORDER BY v <#> '[10,10,10]' LIMIT 5;
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_items ORDER BY v <+> '[10,10,10]' LIMIT 5;
-- Without ORDER BY distance the index is not used.
EXPLAIN (COSTS OFF) SELECT id FROM hnsw_items WHERE id < 10;

CREATE FUNCTION knn(op text, q vector, k int) RETURNS int[] LANGUAGE plpgsql AS $$
DECLARE r int[];
BEGIN
    EXECUTE format('SELECT array_agg(id) FROM (SELECT id FROM hnsw_items ORDER BY v %s $1 LIMIT $2) s', op)
    INTO r USING q, k;
    RETURN r;
END $$;
SELECT id FROM hnsw_items ORDER BY v <-> '[10,10,10]' LIMIT 5;
SELECT op, knn(op, '[10,-20,30]', 10) AS by_index FROM unnest(ARRAY['<->', '<=>', '<#>', '<+>']) op;
SET enable_seqscan = on;
SET enable_indexscan = off;
SELECT op, knn(op, '[10,-20,30]', 10) AS exact FROM unnest(ARRAY['<->', '<=>', '<#>', '<+>']) op;
RESET enable_indexscan;
SET enable_seqscan = off;
-- The exact path: by default a tenant is read whole when that costs no more than its graph
-- search, as 500 vectors of 3 dimensions do.
ALTER INDEX hnsw_l2 RESET (exact_threshold);
ALTER INDEX hnsw_cos RESET (exact_threshold);
ALTER INDEX hnsw_ip RESET (exact_threshold);
ALTER INDEX hnsw_l1 RESET (exact_threshold);
SELECT op, knn(op, '[10,-20,30]', 10) AS by_exact_index_scan FROM unnest(ARRAY['<->', '<=>', '<#>', '<+>']) op;
ALTER INDEX hnsw_l2 SET (exact_threshold = 0);
ALTER INDEX hnsw_cos SET (exact_threshold = 0);
ALTER INDEX hnsw_ip SET (exact_threshold = 0);
ALTER INDEX hnsw_l1 SET (exact_threshold = 0);

-- More rows than ef_search with a filter: the iterative scan still returns k rows.
SET ruvector.ef_search = 10;
SELECT count(*) FROM (SELECT id FROM hnsw_items WHERE id % 7 = 0 ORDER BY v <-> '[0,0,0]' LIMIT 30) s;
SET ruvector.iterative_scan = off;
SELECT count(*) <= 10 AS bounded_by_ef_search FROM (SELECT id FROM hnsw_items WHERE id % 7 = 0 ORDER BY v <-> '[0,0,0]' LIMIT 30) s;
RESET ruvector.iterative_scan;
RESET ruvector.ef_search;
RESET enable_seqscan;

-- Inserts, deletes and VACUUM keep the index answering correctly.
INSERT INTO hnsw_items SELECT i, ARRAY[i, -i, 0]::real[]::vector FROM generate_series(501, 600) i;
DELETE FROM hnsw_items WHERE id % 2 = 0;
VACUUM hnsw_items;
SET enable_seqscan = off;
SELECT id FROM hnsw_items ORDER BY v <-> '[550,-550,0]' LIMIT 3;
RESET enable_seqscan;
SELECT "check", ok FROM ruvector_index_check('hnsw_l2');
SELECT detail FROM ruvector_index_check('hnsw_l2') WHERE "check" IN ('nodes', 'erasure');

-- An index on an empty table without declared dimensions takes them from the first row.
CREATE TABLE hnsw_free (v vector);
CREATE INDEX hnsw_free_v ON hnsw_free USING ruhnsw (v);
SELECT * FROM hnsw_free ORDER BY v <-> '[1,2]' LIMIT 1;
INSERT INTO hnsw_free VALUES ('[1,2]'), ('[3,4]');
SELECT v FROM hnsw_free ORDER BY v <-> '[3,3]' LIMIT 1;
INSERT INTO hnsw_free VALUES ('[1,2,3]');
SELECT v FROM hnsw_free ORDER BY v <-> '[1,2,3]' LIMIT 1;

-- Unlogged tables get an init fork.
CREATE UNLOGGED TABLE hnsw_unlogged (v vector(2));
CREATE INDEX ON hnsw_unlogged USING ruhnsw (v);
INSERT INTO hnsw_unlogged VALUES ('[1,1]');
SELECT v FROM hnsw_unlogged ORDER BY v <-> '[0,0]' LIMIT 1;

-- Errors.
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (m = 1);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (m = 101);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (ef_construction = 1001);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (m = 40, ef_construction = 64);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (exact_threshold = -2);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (lists = 4);
CREATE INDEX ON hnsw_items USING ruhnsw (v) WITH (storage = quarter);
-- Up to 1,984 dimensions in full precision at m = 16, 3,962 in half precision.
CREATE TABLE hnsw_wide (v vector(2000), w vector(3963));
CREATE INDEX ON hnsw_wide USING ruhnsw (v) WITH (storage = full);
CREATE INDEX ON hnsw_wide USING ruhnsw (w);
CREATE INDEX hnsw_wide_v ON hnsw_wide USING ruhnsw (v);
SELECT detail FROM ruvector_index_check('hnsw_wide_v') WHERE "check" = 'metapage';
INSERT INTO hnsw_wide (v) VALUES (array_fill(70000, ARRAY[2000])::vector);
CREATE INDEX ON hnsw_items USING ruhnsw (id);
CREATE INDEX ON hnsw_items USING ruhnsw (v, id);
CREATE INDEX ON hnsw_items USING ruhnsw (v, (id::text), (id::text || 'x'));
SET enable_seqscan = off;
SELECT id FROM hnsw_items ORDER BY v <-> '[1,2]' LIMIT 1;
RESET enable_seqscan;
SET ruvector.ef_search = 0;
SET ruvector.ef_search = 1001;
SELECT * FROM ruvector_index_check('hnsw_items_pkey');
SELECT * FROM ruvector_index_check('hnsw_items');

DROP TABLE hnsw_items, hnsw_free, hnsw_unlogged, hnsw_wide;
DROP FUNCTION knn;
