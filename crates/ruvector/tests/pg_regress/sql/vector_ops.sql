-- Distances, arithmetic, ordering and aggregates of vector.

SELECT '[1,2,3]'::vector <-> '[3,2,1]' AS l2,
       '[1,2,3]'::vector <=> '[3,2,1]' AS cosine,
       '[1,2,3]'::vector <#> '[3,2,1]' AS neg_ip,
       '[1,2,3]'::vector <+> '[3,2,1]' AS l1;
SELECT l2_distance('[0,0]'::vector, '[3,4]'), inner_product('[1,2]'::vector, '[3,4]'),
       cosine_distance('[1,0]'::vector, '[0,1]'), l1_distance('[0,0]'::vector, '[3,-4]');
SELECT cosine_distance('[1,1]'::vector, '[2,2]') AS same_direction,
       cosine_distance('[1,1]'::vector, '[-1,-1]') AS opposite,
       cosine_distance('[0,0]'::vector, '[1,1]') AS zero_is_nan;
SELECT vector_norm('[3,4]'), l2_normalize('[3,4]'::vector), l2_normalize('[0,0]'::vector);
SELECT vector_l2_squared_distance('[1,2]', '[4,6]'), vector_negative_inner_product('[1,2]', '[3,4]');

SELECT '[1,2,3]'::vector + '[4,5,6]' AS add, '[1,2,3]'::vector - '[4,5,6]' AS sub,
       '[1,2,3]'::vector * '[4,5,6]' AS mul;

-- comparison and the btree operator class
SELECT '[1,2]'::vector < '[1,3]', '[1,2]'::vector = '[1,2]', '[1,2]'::vector <> '[1,2,0]',
       '[2]'::vector > '[1,9]', '[1]'::vector <= '[1]', '[1]'::vector >= '[1,0]';
CREATE TABLE order_t (id int, v vector);
INSERT INTO order_t VALUES (1, '[2]'), (2, '[1,5]'), (3, '[1]'), (4, '[1,5]'), (5, '[0.5,9]');
SELECT v FROM order_t ORDER BY v, id;
SELECT DISTINCT v FROM order_t ORDER BY v;
SELECT v, count(*) FROM order_t GROUP BY v ORDER BY v;
CREATE INDEX ON order_t (v);
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT id FROM order_t WHERE v = '[1,5]';
SELECT id FROM order_t WHERE v = '[1,5]' ORDER BY id;
RESET enable_seqscan;
DROP TABLE order_t;
CREATE TABLE uniq_t (v vector UNIQUE);
INSERT INTO uniq_t VALUES ('[1,2]');
INSERT INTO uniq_t VALUES ('[1,2]');
\echo :SQLSTATE
DROP TABLE uniq_t;

-- aggregates, serial and parallel
CREATE TABLE agg_t (g int, v vector(3));
INSERT INTO agg_t SELECT i % 3, ARRAY[i, i * 2, 1]::vector FROM generate_series(1, 3000) i;
SELECT avg(v), sum(v) FROM agg_t;
SELECT g, avg(v), sum(v) FROM agg_t GROUP BY g ORDER BY g;
SELECT avg(v) IS NULL AS avg_of_nothing, sum(v) IS NULL AS sum_of_nothing FROM agg_t WHERE false;
ALTER TABLE agg_t SET (parallel_workers = 2);
SET max_parallel_workers_per_gather = 2;
SET parallel_setup_cost = 0;
SET parallel_tuple_cost = 0;
SET min_parallel_table_scan_size = 0;
EXPLAIN (COSTS OFF) SELECT avg(v), sum(v) FROM agg_t;
SELECT avg(v), sum(v) FROM agg_t;
RESET ALL;
DROP TABLE agg_t;
