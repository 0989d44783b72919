-- Every refused input shows its message, DETAIL/HINT and SQLSTATE (psql's :SQLSTATE).

-- malformed literals: 22P02 invalid_text_representation
SELECT '[1,2'::vector;
\echo :SQLSTATE
SELECT '[1,,2]'::vector;
\echo :SQLSTATE
SELECT '[a]'::vector;
\echo :SQLSTATE
SELECT '1,2'::vector;
\echo :SQLSTATE
SELECT '[1,2] x'::vector;
\echo :SQLSTATE
SELECT '[1,]'::vector;
\echo :SQLSTATE
SELECT ''::vector;
\echo :SQLSTATE
SELECT '[1e]'::vector;
\echo :SQLSTATE

-- no dimensions: 22000 data_exception
SELECT '[]'::vector;
\echo :SQLSTATE
SELECT '{}'::real[]::vector;
\echo :SQLSTATE

-- NaN and infinities: 22000
SELECT '[NaN]'::vector;
\echo :SQLSTATE
SELECT '[1,inf]'::vector;
\echo :SQLSTATE
SELECT '[-Infinity]'::vector;
\echo :SQLSTATE
SELECT ARRAY['NaN']::real[]::vector;
\echo :SQLSTATE
SELECT ARRAY[1e300]::double precision[]::vector;
\echo :SQLSTATE

-- beyond float4: 22003 numeric_value_out_of_range
SELECT '[1e39]'::vector;
\echo :SQLSTATE
SELECT '[1,-3.5e38]'::vector;
\echo :SQLSTATE
SELECT ARRAY[1e39]::numeric[]::vector;
\echo :SQLSTATE
SELECT '[3e38]'::vector + '[3e38]';
\echo :SQLSTATE
SELECT '[1e-30]'::vector * '[1e-30]';
\echo :SQLSTATE

-- too many dimensions: 54000 program_limit_exceeded
SELECT array_fill(1, ARRAY[16001])::vector;
\echo :SQLSTATE
SELECT ('[' || repeat('1,', 16000) || '1]')::vector;
\echo :SQLSTATE
CREATE TABLE bad_t (v vector(16001));
\echo :SQLSTATE
CREATE TABLE bad_t (v vector(0));
\echo :SQLSTATE
CREATE TABLE bad_t (v vector(2, 3));
\echo :SQLSTATE

-- dimension mismatch between operands and against the typmod: 22000
SELECT '[1,2]'::vector <-> '[1,2,3]';
\echo :SQLSTATE
SELECT cosine_distance('[1,2]'::vector, '[1,2,3]');
\echo :SQLSTATE
SELECT '[1,2]'::vector + '[1]';
\echo :SQLSTATE
SELECT '[1,2]'::vector(3);
\echo :SQLSTATE
SELECT ARRAY[1,2]::vector(3);
\echo :SQLSTATE
CREATE TABLE dim_t (v vector(3));
INSERT INTO dim_t VALUES ('[1,2]');
\echo :SQLSTATE
INSERT INTO dim_t VALUES (ARRAY[1,2,3,4]);
\echo :SQLSTATE
SELECT avg(v) FROM (VALUES ('[1,2]'::vector), ('[1,2,3]')) t(v);
\echo :SQLSTATE
DROP TABLE dim_t;

-- arrays that are not vectors
SELECT ARRAY[[1,2],[3,4]]::vector;
\echo :SQLSTATE
SELECT ARRAY[1,NULL]::vector;
\echo :SQLSTATE

-- a 1 MB literal: refused or read in bounded time, never a crash
SELECT vector_dims(('[' || repeat('0', 1048576) || '1]')::vector) AS one_long_element;
SELECT ('[' || repeat('1,', 524288) || '1]')::vector;
\echo :SQLSTATE
DO $$
BEGIN
    PERFORM (repeat('x', 1048576))::vector;
EXCEPTION WHEN invalid_text_representation THEN
    RAISE NOTICE 'refused 1 MB of junk with SQLSTATE %', SQLSTATE;
END $$;

-- the backend survived everything above
SELECT '[1,2,3]'::vector <-> '[3,2,1]' AS still_alive;
