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

-- The library also changed:
-- - a hot standby's tenant registry follows the primary's catalog (tenants created,
--   suspended, resumed and deleted there), and its usage is counted again on promotion;
-- - with ruvector.audit_enabled on, a standby writes its audit records to the server log
--   instead of failing to write ruvector.tenant_audit_log.
-- Index pages are unchanged (format 4): no REINDEX.
