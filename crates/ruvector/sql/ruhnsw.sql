-- ruhnsw: the HNSW index access method, its operator classes and its check function.

CREATE FUNCTION ruhnsw_handler(internal) RETURNS index_am_handler
    AS 'MODULE_PATHNAME', 'rv_ruhnsw_handler' LANGUAGE C;
CREATE ACCESS METHOD ruhnsw TYPE INDEX HANDLER ruhnsw_handler;
COMMENT ON ACCESS METHOD ruhnsw IS 'HNSW approximate nearest-neighbour index, crash-safe and WAL-logged';

-- Each operator class names its distance operator and, as support function 1, the
-- distance function the index computes.
CREATE OPERATOR CLASS vector_l2_ops DEFAULT FOR TYPE vector USING ruhnsw AS
    OPERATOR 1 <-> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 l2_distance(vector, vector);
CREATE OPERATOR CLASS vector_cosine_ops FOR TYPE vector USING ruhnsw AS
    OPERATOR 1 <=> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 cosine_distance(vector, vector);
CREATE OPERATOR CLASS vector_ip_ops FOR TYPE vector USING ruhnsw AS
    OPERATOR 1 <#> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 vector_negative_inner_product(vector, vector);
CREATE OPERATOR CLASS vector_l1_ops FOR TYPE vector USING ruhnsw AS
    OPERATOR 1 <+> (vector, vector) FOR ORDER BY float_ops,
    FUNCTION 1 l1_distance(vector, vector);
-- Half-precision vectors: stored as halves (the storage option's auto), exactly, so up to
-- about 3,900 dimensions with m = 16.
CREATE OPERATOR CLASS halfvec_l2_ops FOR TYPE halfvec USING ruhnsw AS
    OPERATOR 1 <-> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 l2_distance(halfvec, halfvec);
CREATE OPERATOR CLASS halfvec_cosine_ops FOR TYPE halfvec USING ruhnsw AS
    OPERATOR 1 <=> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 cosine_distance(halfvec, halfvec);
CREATE OPERATOR CLASS halfvec_ip_ops FOR TYPE halfvec USING ruhnsw AS
    OPERATOR 1 <#> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 halfvec_negative_inner_product(halfvec, halfvec);
CREATE OPERATOR CLASS halfvec_l1_ops FOR TYPE halfvec USING ruhnsw AS
    OPERATOR 1 <+> (halfvec, halfvec) FOR ORDER BY float_ops,
    FUNCTION 1 l1_distance(halfvec, halfvec);
-- Bit strings (binary_quantize(embedding)::bit(n)): stored one bit per element, at most
-- about 1,900 bits per node with m = 16.
CREATE OPERATOR CLASS bit_hamming_ops FOR TYPE bit USING ruhnsw AS
    OPERATOR 1 <~> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 hamming_distance(bit, bit);
CREATE OPERATOR CLASS bit_jaccard_ops FOR TYPE bit USING ruhnsw AS
    OPERATOR 1 <%> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 jaccard_distance(bit, bit);

-- The tenant column of a tenant-keyed index (its second key column): equality only, so that
-- `WHERE tenant_id = ...` reaches the index. On a table registered with
-- ruvector_enable_tenant_rls, CREATE INDEX ... USING ruhnsw (vec opclass) adds the tenant
-- column itself.
CREATE OPERATOR CLASS ruhnsw_tenant_ops DEFAULT FOR TYPE text USING ruhnsw AS
    OPERATOR 1 = (text, text);

CREATE FUNCTION ruvector_index_check(index regclass, OUT "check" text, OUT ok boolean, OUT detail text)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'rv_index_check' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION ruvector_index_check(regclass) IS
    'verifies the structure of a ruhnsw index; one row per check';
REVOKE EXECUTE ON FUNCTION ruvector_index_check(regclass) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector_index_check(regclass) TO ruvector_admin;
