-- Text and binary forms, type modifiers and casts of vector.

-- whitespace around brackets and elements, signs, exponents
SELECT '[1,2.5,3]'::vector;
SELECT ' [ 1 , 2.5 ,3 ] '::vector;
SELECT (E'\t[\n1,\r2\f,3' || chr(11) || E']\n')::vector;
SELECT '[+1,-2,.5,1.,1e2,1E-2]'::vector;
SELECT '[-0]'::vector, '[0]'::vector;

-- output uses PostgreSQL's shortest float4 text, fixed for exponents -4..5
SELECT '[0.0001,0.00001,123456,1234567,1e6,3.4028235e38,1.17549435e-38,1e-45]'::vector;
SELECT '[0.1,0.33333334,100000.5]'::vector;
SELECT '[1e-50]'::vector AS underflow_reads_as_zero;

-- dimensions and type modifiers
SELECT vector_dims('[1,2,3]'::vector);
SELECT '[1,2,3]'::vector(3);
SELECT vector_dims(array_fill(1, ARRAY[16000])::vector(16000));
CREATE TABLE typmod_t (v vector(3));
INSERT INTO typmod_t VALUES ('[1,2,3]');
SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'typmod_t'::regclass AND attname = 'v';
DROP TABLE typmod_t;

-- binary form: int16 dim, int16 zero, big-endian float4 elements
SELECT vector_send('[1,2.5,-3]'::vector);

-- casts from arrays
SELECT ARRAY[1,2,3]::vector;
SELECT ARRAY[1.5,2.25]::real[]::vector;
SELECT ARRAY[1.5,2.25]::double precision[]::vector;
SELECT ARRAY[1.5,2.25]::numeric[]::vector;

-- casts to arrays
SELECT '[1,2.5,3]'::vector::real[];
SELECT '[1,2.5,3]'::vector::double precision[];
SELECT '[1,2.5,3.5]'::vector::integer[];
SELECT '[1,2.5,3]'::vector::numeric[];

-- assignment casts into vector columns
CREATE TABLE cast_t (v vector(2));
INSERT INTO cast_t VALUES (ARRAY[1,2]), (ARRAY[0.5,1.5]::real[]);
SELECT v FROM cast_t ORDER BY v;
DROP TABLE cast_t;
