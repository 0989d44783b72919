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
-- (Code 7, the cosine of halfvec columns, comes with the halfvec type below.)

-- ruvector_tenant_create with an isolation_level other than shared called
-- ruvector_tenant_migrate without its schema, which its search_path does not hold.
CREATE OR REPLACE FUNCTION ruvector_tenant_create(p_tenant_id text, p_options jsonb DEFAULT '{}'::jsonb)
RETURNS ruvector.tenants
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    known constant text[] := ARRAY['display_name', 'max_vectors', 'max_collections', 'max_qps',
        'max_storage_gb', 'max_concurrent', 'weight', 'isolation_level', 'integrity_enabled', 'metadata'];
    k text;
    result ruvector.tenants;
BEGIN
    PERFORM ruvector._require_admin('create a tenant');
    PERFORM ruvector._check_tenant_id(p_tenant_id);
    IF jsonb_typeof(p_options) <> 'object' THEN
        RAISE EXCEPTION 'tenant options must be a JSON object' USING ERRCODE = '22023',
            HINT = 'For example ''{"max_vectors": 5000000, "max_qps": 200}''.';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_options) LOOP
        IF NOT k = ANY (known) THEN
            RAISE EXCEPTION 'unknown tenant option "%"', k USING ERRCODE = '22023',
                HINT = 'Known options: ' || array_to_string(known, ', ') || '.';
        END IF;
    END LOOP;
    IF EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = p_tenant_id AND deleted_at IS NULL) THEN
        RAISE EXCEPTION 'tenant "%" already exists', p_tenant_id USING ERRCODE = '42710';
    ELSIF EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = p_tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" is deleted and not yet purged', p_tenant_id USING ERRCODE = '55000',
            HINT = 'Wait for the purge, or delete it with hard := true first.';
    END IF;
    INSERT INTO ruvector.tenants (id, display_name, max_vectors, max_collections, max_qps,
                                  max_storage_gb, max_concurrent, weight, isolation_level,
                                  integrity_enabled, metadata)
    VALUES (p_tenant_id,
            p_options->>'display_name',
            coalesce((p_options->>'max_vectors')::bigint, 1000000),
            coalesce((p_options->>'max_collections')::integer, 10),
            coalesce((p_options->>'max_qps')::integer, 100),
            coalesce((p_options->>'max_storage_gb')::real, 10.0),
            coalesce((p_options->>'max_concurrent')::integer, 10),
            coalesce((p_options->>'weight')::real, 1.0),
            'shared',
            coalesce((p_options->>'integrity_enabled')::boolean, true),
            coalesce(p_options->'metadata', '{}'::jsonb))
    RETURNING * INTO result;
    PERFORM ruvector._audit(p_tenant_id, 'create', p_options::text);
    -- Another level than shared is reached by a migration, like any later move.
    IF coalesce(p_options->>'isolation_level', 'shared') <> 'shared' THEN
        PERFORM @extschema@.ruvector_tenant_migrate(p_tenant_id, p_options->>'isolation_level');
    END IF;
    RETURN result;
END $$;

-- Moving a tenant to another server --------------------------------------------------------
-- The tenant's catalog rows travel as one JSON document (ruvector_tenant_export on the
-- source, ruvector_tenant_import on the target); its rows travel by logical replication (a
-- publication with a row filter on the tenant column); ruvector_tenant_recount counts them
-- on the target at cut-over. docs/operations.md has the procedure.

CREATE FUNCTION ruvector_tenant_export(p_tenant_id text) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t ruvector.tenants;
BEGIN
    PERFORM ruvector._require_admin('export a tenant');
    SELECT * INTO t FROM ruvector.tenants WHERE id = p_tenant_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    RETURN jsonb_build_object(
        'format', 1,
        'tenant', jsonb_build_object(
            'id', t.id, 'display_name', t.display_name, 'max_vectors', t.max_vectors,
            'max_collections', t.max_collections, 'max_qps', t.max_qps,
            'max_storage_gb', t.max_storage_gb, 'max_concurrent', t.max_concurrent,
            'weight', t.weight, 'isolation_level', t.isolation_level,
            'integrity_enabled', t.integrity_enabled, 'metadata', t.metadata,
            'suspended', t.suspended_at IS NOT NULL,
            'integrity_policy', (SELECT p.name FROM ruvector.integrity_policies p
                                 WHERE p.id = t.integrity_policy_id)),
        'collections', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'name', c.name, 'dimensions', c.dimensions, 'metric', c.metric,
                'metadata', c.metadata) ORDER BY c.id)
            FROM ruvector.collections c WHERE c.tenant_id = p_tenant_id), '[]'::jsonb),
        'integrity_policies', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'name', p.name, 'collection', c.name, 'threshold_high', p.threshold_high,
                'threshold_low', p.threshold_low, 'hysteresis', p.hysteresis,
                'actions', p.actions, 'sample_interval_secs', p.sample_interval_secs) ORDER BY p.id)
            FROM ruvector.integrity_policies p LEFT JOIN ruvector.collections c ON c.id = p.collection_id
            WHERE p.tenant_id = p_tenant_id), '[]'::jsonb),
        'role_bindings', coalesce((SELECT jsonb_agg(b.role_name ORDER BY b.role_name)
            FROM ruvector.tenant_role_bindings b WHERE b.tenant_id = p_tenant_id), '[]'::jsonb));
END $$;
COMMENT ON FUNCTION ruvector_tenant_export(text) IS
    'a tenant''s catalog rows as JSON, for ruvector_tenant_import on another server (ruvector_admin)';

-- Creates the tenant of an export, suspended: its rows arrive by replication, and
-- ruvector_tenant_recount and ruvector_tenant_resume open it at cut-over. Role bindings are
-- made for the roles that exist here (a NOTICE names the others).
CREATE FUNCTION ruvector_tenant_import(p_export jsonb) RETURNS ruvector.tenants
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t constant jsonb := p_export->'tenant';
    v_id constant text := p_export->'tenant'->>'id';
    c jsonb;
    p jsonb;
    r text;
    result ruvector.tenants;
BEGIN
    PERFORM ruvector._require_admin('import a tenant');
    IF jsonb_typeof(p_export) IS DISTINCT FROM 'object' OR (p_export->>'format') IS DISTINCT FROM '1'
       OR jsonb_typeof(t) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'not a tenant export of format 1' USING ERRCODE = '22023',
            HINT = 'Pass the document ruvector_tenant_export returned.';
    END IF;
    PERFORM @extschema@.ruvector_tenant_create(v_id, jsonb_strip_nulls(jsonb_build_object(
        'display_name', t->'display_name', 'max_vectors', t->'max_vectors',
        'max_collections', t->'max_collections', 'max_qps', t->'max_qps',
        'max_storage_gb', t->'max_storage_gb', 'max_concurrent', t->'max_concurrent',
        'weight', t->'weight', 'integrity_enabled', t->'integrity_enabled',
        'metadata', t->'metadata')));
    PERFORM @extschema@.ruvector_tenant_suspend(v_id);
    FOR c IN SELECT * FROM jsonb_array_elements(coalesce(p_export->'collections', '[]')) LOOP
        INSERT INTO ruvector.collections (name, tenant_id, dimensions, metric, metadata)
        VALUES (c->>'name', v_id, (c->>'dimensions')::integer, c->>'metric',
                coalesce(c->'metadata', '{}'::jsonb));
    END LOOP;
    FOR p IN SELECT * FROM jsonb_array_elements(coalesce(p_export->'integrity_policies', '[]')) LOOP
        INSERT INTO ruvector.integrity_policies (tenant_id, collection_id, name, threshold_high,
            threshold_low, hysteresis, actions, sample_interval_secs)
        VALUES (v_id, (SELECT x.id FROM ruvector.collections x
                     WHERE x.tenant_id = v_id AND x.name = p->>'collection'),
                p->>'name', (p->>'threshold_high')::real, (p->>'threshold_low')::real,
                p->'hysteresis', p->'actions', (p->>'sample_interval_secs')::integer);
    END LOOP;
    UPDATE ruvector.tenants SET integrity_policy_id = (
        SELECT x.id FROM ruvector.integrity_policies x
        WHERE x.name = t->>'integrity_policy' AND (x.tenant_id = v_id OR x.tenant_id IS NULL)
        ORDER BY x.tenant_id NULLS LAST, x.id DESC LIMIT 1)
    WHERE ruvector.tenants.id = v_id;
    FOR r IN SELECT * FROM jsonb_array_elements_text(coalesce(p_export->'role_bindings', '[]')) LOOP
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            PERFORM @extschema@.ruvector_tenant_bind_role(r::name, v_id);
        ELSE
            RAISE NOTICE 'role "%" does not exist here: not bound to tenant "%"', r, v_id
                USING HINT = 'Create the role, then SELECT ruvector_tenant_bind_role(role, tenant).';
        END IF;
    END LOOP;
    IF coalesce(t->>'isolation_level', 'shared') <> 'shared' THEN
        PERFORM @extschema@.ruvector_tenant_migrate(v_id, t->>'isolation_level');
    END IF;
    PERFORM ruvector._audit(v_id, 'import', '{}');
    SELECT * INTO result FROM ruvector.tenants x WHERE x.id = v_id;
    RETURN result;
END $$;
COMMENT ON FUNCTION ruvector_tenant_import(jsonb) IS
    'create a tenant from ruvector_tenant_export''s document, suspended (ruvector_admin)';

CREATE FUNCTION ruvector._recount(tenant_id text, OUT vectors bigint, OUT storage_bytes bigint)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'rv_recount' LANGUAGE C VOLATILE STRICT;

-- Counts a tenant's rows and bytes in the registered tenant tables again and makes them its
-- usage: after rows arrived by replication, which fires no quota trigger.
CREATE FUNCTION ruvector_tenant_recount(p_tenant_id text, OUT vectors bigint, OUT storage_bytes bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('recount a tenant');
    IF NOT EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = p_tenant_id AND deleted_at IS NULL) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    SELECT r.vectors, r.storage_bytes INTO vectors, storage_bytes FROM ruvector._recount(p_tenant_id) r;
    PERFORM ruvector._audit(p_tenant_id, 'recount', jsonb_build_object('vectors', vectors)::text);
END $$;
COMMENT ON FUNCTION ruvector_tenant_recount(text) IS
    'count a tenant''s rows again and make them its quota usage (ruvector_admin)';
REVOKE EXECUTE ON FUNCTION ruvector._recount(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._recount(text) TO ruvector_admin;

-- The halfvec type (new in 0.2.0): the whole of sql/halfvec.sql, then its ruhnsw operator
-- classes from sql/ruhnsw.sql.
CREATE TYPE halfvec;

CREATE FUNCTION halfvec_in(cstring, oid, integer) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_out(halfvec) RETURNS cstring
    AS 'MODULE_PATHNAME', 'rv_halfvec_out' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_typmod_in(cstring[]) RETURNS integer
    AS 'MODULE_PATHNAME', 'rv_halfvec_typmod_in' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_recv(internal, oid, integer) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_recv' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_send(halfvec) RETURNS bytea
    AS 'MODULE_PATHNAME', 'rv_halfvec_send' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE TYPE halfvec (
    INPUT     = halfvec_in,
    OUTPUT    = halfvec_out,
    TYPMOD_IN = halfvec_typmod_in,
    RECEIVE   = halfvec_recv,
    SEND      = halfvec_send,
    STORAGE   = external
);
COMMENT ON TYPE halfvec IS 'half-precision vector of 1 to 16000 dimensions';

-- Functions -----------------------------------------------------------------------------

CREATE FUNCTION l2_distance(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_l2_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_distance(halfvec, halfvec) IS 'Euclidean distance';
CREATE FUNCTION inner_product(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION inner_product(halfvec, halfvec) IS 'inner product';
CREATE FUNCTION cosine_distance(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_cosine_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION cosine_distance(halfvec, halfvec) IS 'cosine distance, 1 - cosine similarity';
CREATE FUNCTION l1_distance(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_l1_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l1_distance(halfvec, halfvec) IS 'taxicab distance';
CREATE FUNCTION vector_dims(halfvec) RETURNS integer
    AS 'MODULE_PATHNAME', 'rv_halfvec_vector_dims' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION vector_dims(halfvec) IS 'number of dimensions';
CREATE FUNCTION l2_norm(halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_l2_norm' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_norm(halfvec) IS 'Euclidean norm';
CREATE FUNCTION l2_normalize(halfvec) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_l2_normalize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION l2_normalize(halfvec) IS 'normalize to Euclidean norm 1';
CREATE FUNCTION binary_quantize(halfvec) RETURNS bit
    AS 'MODULE_PATHNAME', 'rv_halfvec_binary_quantize' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION binary_quantize(halfvec) IS 'a bit per element, set when the element is positive';
CREATE FUNCTION subvector(halfvec, integer, integer) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_subvector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION subvector(halfvec, integer, integer) IS 'the elements from a 1-based position, like substring';

-- Functions behind the operators, btree operator class and aggregates.
CREATE FUNCTION halfvec_add(halfvec, halfvec) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_add' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_sub(halfvec, halfvec) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_sub' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_mul(halfvec, halfvec) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_mul' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_concat(halfvec, halfvec) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_concat' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_lt(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_lt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_le(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_le' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_eq(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_eq' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_ne(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_ne' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_ge(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_ge' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_gt(halfvec, halfvec) RETURNS bool
    AS 'MODULE_PATHNAME', 'rv_halfvec_gt' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_cmp(halfvec, halfvec) RETURNS int4
    AS 'MODULE_PATHNAME', 'rv_halfvec_cmp' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_l2_squared_distance(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_l2_squared_distance' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION halfvec_l2_squared_distance(halfvec, halfvec) IS 'squared Euclidean distance';
CREATE FUNCTION halfvec_negative_inner_product(halfvec, halfvec) RETURNS float8
    AS 'MODULE_PATHNAME', 'rv_halfvec_negative_inner_product' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION halfvec_negative_inner_product(halfvec, halfvec) IS 'negative inner product';

-- Aggregates: avg's state is the same float8[] as avg(vector)'s.
CREATE FUNCTION halfvec_accum(double precision[], halfvec) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'rv_halfvec_accum' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_avg(double precision[]) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_avg' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_combine(double precision[], double precision[]) RETURNS double precision[]
    AS 'MODULE_PATHNAME', 'rv_vector_combine' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE AGGREGATE avg(halfvec) (
    SFUNC = halfvec_accum,
    STYPE = double precision[],
    FINALFUNC = halfvec_avg,
    COMBINEFUNC = halfvec_combine,
    INITCOND = '{0}',
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE avg(halfvec) IS 'element-wise arithmetic mean';

CREATE AGGREGATE sum(halfvec) (
    SFUNC = halfvec_add,
    STYPE = halfvec,
    COMBINEFUNC = halfvec_add,
    PARALLEL = SAFE
);
COMMENT ON AGGREGATE sum(halfvec) IS 'element-wise sum';

-- Casts: from vector implicitly (rounded to the nearest half), to vector on assignment
-- (exact), and from and to arrays, as in pgvector.

CREATE FUNCTION halfvec(halfvec, integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_halfvec_typmod_cast' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_to_vector(halfvec, integer, boolean) RETURNS vector
    AS 'MODULE_PATHNAME', 'rv_halfvec_to_vector' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION vector_to_halfvec(vector, integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_vector_to_halfvec' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_halfvec(integer[], integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_array_to_halfvec' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_halfvec(real[], integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_array_to_halfvec' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_halfvec(double precision[], integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_array_to_halfvec' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION array_to_halfvec(numeric[], integer, boolean) RETURNS halfvec
    AS 'MODULE_PATHNAME', 'rv_array_to_halfvec' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;
CREATE FUNCTION halfvec_to_float4(halfvec, integer, boolean) RETURNS real[]
    AS 'MODULE_PATHNAME', 'rv_halfvec_to_float4' LANGUAGE C IMMUTABLE STRICT PARALLEL SAFE;

CREATE CAST (halfvec AS halfvec)
    WITH FUNCTION halfvec(halfvec, integer, boolean) AS IMPLICIT;
CREATE CAST (halfvec AS vector)
    WITH FUNCTION halfvec_to_vector(halfvec, integer, boolean) AS ASSIGNMENT;
CREATE CAST (vector AS halfvec)
    WITH FUNCTION vector_to_halfvec(vector, integer, boolean) AS IMPLICIT;
CREATE CAST (halfvec AS real[])
    WITH FUNCTION halfvec_to_float4(halfvec, integer, boolean) AS ASSIGNMENT;
CREATE CAST (integer[] AS halfvec)
    WITH FUNCTION array_to_halfvec(integer[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (real[] AS halfvec)
    WITH FUNCTION array_to_halfvec(real[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (double precision[] AS halfvec)
    WITH FUNCTION array_to_halfvec(double precision[], integer, boolean) AS ASSIGNMENT;
CREATE CAST (numeric[] AS halfvec)
    WITH FUNCTION array_to_halfvec(numeric[], integer, boolean) AS ASSIGNMENT;

-- Operators -----------------------------------------------------------------------------

CREATE OPERATOR <-> (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = l2_distance, COMMUTATOR = '<->'
);
CREATE OPERATOR <#> (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_negative_inner_product, COMMUTATOR = '<#>'
);
CREATE OPERATOR <=> (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = cosine_distance, COMMUTATOR = '<=>'
);
CREATE OPERATOR <+> (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = l1_distance, COMMUTATOR = '<+>'
);

CREATE OPERATOR + (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_add, COMMUTATOR = +
);
CREATE OPERATOR || (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_concat
);
CREATE OPERATOR - (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_sub
);
CREATE OPERATOR * (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_mul, COMMUTATOR = *
);

CREATE OPERATOR < (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_lt,
    COMMUTATOR = > , NEGATOR = >= ,
    RESTRICT = scalarltsel, JOIN = scalarltjoinsel
);
CREATE OPERATOR <= (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_le,
    COMMUTATOR = >= , NEGATOR = > ,
    RESTRICT = scalarlesel, JOIN = scalarlejoinsel
);
CREATE OPERATOR = (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_eq,
    COMMUTATOR = = , NEGATOR = <> ,
    RESTRICT = eqsel, JOIN = eqjoinsel
);
CREATE OPERATOR <> (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_ne,
    COMMUTATOR = <> , NEGATOR = = ,
    RESTRICT = neqsel, JOIN = neqjoinsel
);
CREATE OPERATOR >= (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_ge,
    COMMUTATOR = <= , NEGATOR = < ,
    RESTRICT = scalargesel, JOIN = scalargejoinsel
);
CREATE OPERATOR > (
    LEFTARG = halfvec, RIGHTARG = halfvec, FUNCTION = halfvec_gt,
    COMMUTATOR = < , NEGATOR = <= ,
    RESTRICT = scalargtsel, JOIN = scalargtjoinsel
);

CREATE OPERATOR CLASS halfvec_ops
    DEFAULT FOR TYPE halfvec USING btree AS
    OPERATOR 1 < ,
    OPERATOR 2 <= ,
    OPERATOR 3 = ,
    OPERATOR 4 >= ,
    OPERATOR 5 > ,
    FUNCTION 1 halfvec_cmp(halfvec, halfvec);

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

-- The library also changed:
-- - a hot standby's tenant registry follows the primary's catalog (tenants created,
--   suspended, resumed and deleted there), and its usage is counted again on promotion;
-- - with ruvector.audit_enabled on, a standby writes its audit records to the server log
--   instead of failing to write ruvector.tenant_audit_log.
-- Index pages are unchanged (format 4): no REINDEX.
