-- ruvector 0.1.0 -> 0.2.0 (ALTER EXTENSION ruvector UPDATE).
\echo Use "ALTER EXTENSION ruvector UPDATE TO '0.2.0'" to load this file. \quit

-- Bit distances, as pgvector has them: hamming_distance and jaccard_distance of two bit
-- strings (binary_quantize makes them from vectors), and the operators <~> and <%>.
CREATE FUNCTION hamming_distance(bit, bit) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_hamming_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION hamming_distance(bit, bit) IS 'the number of positions where two bit strings differ';
CREATE FUNCTION jaccard_distance(bit, bit) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_jaccard_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION jaccard_distance(bit, bit) IS '1 - |a AND b| / |a OR b| over the set bits (1 when no bit is set in both)';
CREATE OPERATOR <~> (LEFTARG = bit, RIGHTARG = bit, FUNCTION = hamming_distance, COMMUTATOR = '<~>');
CREATE OPERATOR <%> (LEFTARG = bit, RIGHTARG = bit, FUNCTION = jaccard_distance, COMMUTATOR = '<%>');

-- ruhnsw indexes on bit strings (binary_quantize(embedding)::bit(n)): stored one bit per element, at most
-- about 1,900 bits per node with m = 16.
CREATE OPERATOR CLASS bit_hamming_ops FOR TYPE bit USING ruhnsw AS
    OPERATOR 1 <~> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 hamming_distance(bit, bit);
CREATE OPERATOR CLASS bit_jaccard_ops FOR TYPE bit USING ruhnsw AS
    OPERATOR 1 <%> (bit, bit) FOR ORDER BY float_ops,
    FUNCTION 1 jaccard_distance(bit, bit);
-- Metric codes 5 (Hamming) and 6 (Jaccard) are new in the metapage; earlier indexes keep theirs.

-- The library also changed:
-- - a hot standby's tenant registry follows the primary's catalog (tenants created,
--   suspended, resumed and deleted there), and its usage is counted again on promotion;
-- - with ruvector.audit_enabled on, a standby writes its audit records to the server log
--   instead of failing to write ruvector.tenant_audit_log.
-- Index pages are unchanged (format 4): no REINDEX.
