-- halfvec beside vector: casts both ways, SQLSTATEs of refused values, a halfvec column
-- searched with a vector, and its ruhnsw index storing the halves exactly.
-- (pgvector's own halfvec and hnsw_halfvec tests run in scripts/test as well.)

-- rounding to the nearest half, both ways exact for halves
SELECT '[0.1,1.23456,65519,1e-8]'::vector::halfvec;
SELECT '[0.1,1.23456]'::halfvec::vector;
SELECT '{1,2.5,-3}'::real[]::halfvec, '{1,2}'::integer[]::halfvec(2), '{0.5}'::numeric[]::halfvec;
SELECT '[1,2.5,-3]'::halfvec::real[];
SELECT array_agg(v ORDER BY v) FROM unnest(ARRAY['[2,1]'::halfvec, '[1,2]', '[1,1]']) v;

-- refused values: 22003 out of range, 22000 wrong dimensions / NaN, 22P02 syntax
SELECT '[70000]'::vector::halfvec;
\echo :SQLSTATE
SELECT '{1e5}'::double precision[]::halfvec;
\echo :SQLSTATE
SELECT '[60000]'::halfvec + '[60000]';
\echo :SQLSTATE
SELECT '[1,2]'::halfvec <-> '[1,2,3]';
\echo :SQLSTATE
SELECT '[1,2,3]'::vector::halfvec(2);
\echo :SQLSTATE
SELECT '[1,x]'::halfvec;
\echo :SQLSTATE

-- a halfvec column, queried with a vector (cast implicitly) and with a halfvec
CREATE TABLE half_items (id int PRIMARY KEY, v halfvec(4));
INSERT INTO half_items SELECT i, ARRAY[i, i % 7, -i % 5, 0.001 * i]::real[]::halfvec
    FROM generate_series(1, 2000) i;
CREATE INDEX half_items_v ON half_items USING ruhnsw (v halfvec_l2_ops);
SELECT detail FROM ruvector_index_check('half_items_v') WHERE "check" = 'metapage';
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM half_items ORDER BY v <-> '[10,3,0,0.01]'::vector LIMIT 3;
SELECT id, v, v <-> '[10,3,0,0.01]'::vector AS d FROM half_items ORDER BY v <-> '[10,3,0,0.01]'::vector LIMIT 3;
SELECT id FROM half_items ORDER BY v <#> '[1,1,1,1]'::halfvec LIMIT 3;
RESET enable_seqscan;
-- the index answers as an exact sort does
SELECT (SELECT array_agg(id) FROM (SELECT id FROM half_items ORDER BY v <-> '[500,1,2,3]' LIMIT 10) a)
     = (SELECT array_agg(id) FROM (SELECT id FROM half_items ORDER BY l2_distance(v, '[500,1,2,3]'::halfvec), id LIMIT 10) b)
    AS same_as_exact;

-- a 3,072-dimension column indexes at m = 16 (a vector index could hold at most 1,984)
CREATE TABLE half_wide (id int, v halfvec(3072));
INSERT INTO half_wide SELECT i, array_fill(i::real / 100, ARRAY[3072])::halfvec FROM generate_series(1, 20) i;
CREATE INDEX half_wide_v ON half_wide USING ruhnsw (v halfvec_cosine_ops);
SELECT detail FROM ruvector_index_check('half_wide_v') WHERE "check" = 'metapage';
DROP TABLE half_items, half_wide;
