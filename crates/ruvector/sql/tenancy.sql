-- Multi-tenancy: roles, the ruvector catalog schema, lifecycle functions and RLS helpers.
--
-- Security model: applications connect as a role without SUPERUSER or BYPASSRLS that is a
-- member of ruvector_user. Tenant tables are protected by row-level security (FORCE, so
-- table owners are confined too) and by the context layer in the extension, which refuses
-- any statement on a tenant table without a valid, active tenant context. The catalog is
-- owned by the extension; tenants read their own rows through views, and change nothing.

DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ruvector_admin') THEN
        CREATE ROLE ruvector_admin NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ruvector_user') THEN
        CREATE ROLE ruvector_user NOLOGIN;
    END IF;
END
$roles$;
COMMENT ON ROLE ruvector_admin IS 'RuVector administrators: tenant lifecycle, the * tenant context, all tenant rows';
COMMENT ON ROLE ruvector_user IS 'RuVector applications: grant this role to the application''s login role';

CREATE SCHEMA ruvector;
-- Every role may name objects in the schema (table owners write policies with
-- ruvector.current_tenant()); what it may read or run is granted object by object.
GRANT USAGE ON SCHEMA ruvector TO PUBLIC;

-- Internal functions (the Rust side) -------------------------------------------------------

-- Wakes the background worker when the transaction commits (a migration to start).
CREATE FUNCTION ruvector._wake_maintenance() RETURNS void
    AS 'MODULE_PATHNAME', 'rv_wake_maintenance' LANGUAGE C VOLATILE STRICT;
-- Applies a tenant's catalog row to the shared registry when the transaction commits.
CREATE FUNCTION ruvector._registry_sync(id text, state text, max_vectors bigint, max_storage_gb real,
                                        max_qps integer, max_concurrent integer, weight real,
                                        created boolean, own_pages boolean) RETURNS void
    AS 'MODULE_PATHNAME', 'rv_registry_sync' LANGUAGE C VOLATILE STRICT;
-- Marks the set of tenant tables as changed (every backend reloads its cache) at commit.
CREATE FUNCTION ruvector._tables_changed() RETURNS void
    AS 'MODULE_PATHNAME', 'rv_tables_changed' LANGUAGE C VOLATILE STRICT;
-- Raises 42501 unless the current user may administer tenants.
CREATE FUNCTION ruvector._require_admin(what text) RETURNS void
    AS 'MODULE_PATHNAME', 'rv_require_admin' LANGUAGE C STABLE STRICT;
-- Raises 22023 for a malformed tenant id.
CREATE FUNCTION ruvector._check_tenant_id(id text) RETURNS void
    AS 'MODULE_PATHNAME', 'rv_check_tenant_id' LANGUAGE C IMMUTABLE STRICT;
-- The tenant the running statement was validated for ('*' or an id), NULL without a
-- context. Row-level security policies of tenant tables compare with it, never with the raw
-- setting, which can change while a statement runs (a RESET through set_config(), a
-- function's SET clause on exit): if the setting no longer names that tenant, it raises
-- 42501. STABLE and PARALLEL SAFE, so that `tenant_id = ruvector.current_tenant()` is an
-- index condition and parallel plans stay possible.
CREATE FUNCTION ruvector.current_tenant() RETURNS text
    AS 'MODULE_PATHNAME', 'rv_current_tenant' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION ruvector.current_tenant() IS 'the tenant validated for the running statement (''*'' or an id), NULL without a context';
GRANT EXECUTE ON FUNCTION ruvector.current_tenant() TO PUBLIC;
-- Quota trigger of tenant tables: AFTER INSERT OR UPDATE OR DELETE, FOR EACH ROW. Installed
-- by ruvector_enable_tenant_rls; nobody else can attach it.
CREATE FUNCTION ruvector._quota_trigger() RETURNS trigger
    AS 'MODULE_PATHNAME', 'rv_quota_trigger' LANGUAGE C;
-- An audit record of a lifecycle call (written only when ruvector.audit_enabled is on).
CREATE FUNCTION ruvector._audit(tenant_id text, operation text, details text) RETURNS void
    AS 'MODULE_PATHNAME', 'rv_audit' LANGUAGE C VOLATILE STRICT;
-- Live usage and statistics from shared memory: every tenant of this database for admins,
-- the current tenant only for everyone else.
CREATE FUNCTION ruvector._live_stats(
    OUT tenant_id text, OUT state text, OUT current_vectors bigint, OUT reserved_vectors bigint,
    OUT storage_bytes bigint, OUT searches bigint, OUT inserts bigint, OUT updates bigint,
    OUT deletes bigint, OUT refused bigint, OUT search_ms_total double precision,
    OUT searches_last_hour bigint, OUT last_access timestamptz, OUT admitted bigint,
    OUT rate_limited bigint, OUT queued bigint, OUT wait_ms_total bigint,
    OUT search_latency_p50_ms double precision, OUT search_latency_p99_ms double precision,
    OUT qps double precision, OUT window_statements bigint, OUT window_start timestamptz,
    OUT integrity_state text, OUT lambda_cut real)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'rv_live_stats' LANGUAGE C VOLATILE STRICT;

-- Catalog -------------------------------------------------------------------------------

CREATE TABLE ruvector.integrity_policies (
    id                  serial PRIMARY KEY,
    tenant_id           text,                 -- NULL: a built-in or shared policy
    collection_id       integer,              -- NULL: every collection of the tenant
    name                text NOT NULL,
    threshold_high      real NOT NULL DEFAULT 0.4,
    threshold_low       real NOT NULL DEFAULT 0.15,
    hysteresis          jsonb NOT NULL DEFAULT '{"degrade_samples": 3, "critical_samples": 2,
        "restore_threshold_offset": 0.1, "restore_hold_seconds": 300,
        "cooldown_after_transition_seconds": 60}'::jsonb,
    actions             jsonb NOT NULL DEFAULT '{}'::jsonb,
    sample_interval_secs integer NOT NULL DEFAULT 60 CHECK (sample_interval_secs > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (0 <= threshold_low AND threshold_low < threshold_high AND threshold_high <= 1)
);
INSERT INTO ruvector.integrity_policies (name, threshold_high, threshold_low) VALUES ('standard', 0.4, 0.15);

CREATE TABLE ruvector.tenants (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._-]{1,63}$'),
    display_name    text,
    max_vectors     bigint DEFAULT 1000000 CHECK (max_vectors >= 0),
    max_collections integer DEFAULT 10 CHECK (max_collections >= 0),
    max_qps         integer DEFAULT 100 CHECK (max_qps >= 0),
    max_storage_gb  real NOT NULL DEFAULT 10.0 CHECK (max_storage_gb >= 0),
    max_concurrent  integer NOT NULL DEFAULT 10 CHECK (max_concurrent >= 0),   -- 0: no limit
    weight          real NOT NULL DEFAULT 1.0 CHECK (weight > 0),               -- fair share
    isolation_level text DEFAULT 'shared' CHECK (isolation_level IN ('shared', 'partition', 'dedicated')),
    integrity_enabled   boolean DEFAULT true,
    integrity_policy_id integer REFERENCES ruvector.integrity_policies(id),
    metadata        jsonb DEFAULT '{}'::jsonb,
    created_at      timestamptz DEFAULT now(),
    suspended_at    timestamptz,          -- non-null: suspended
    deleted_at      timestamptz,          -- non-null: soft-deleted, refused, purged later
    purge_after     timestamptz,          -- when the background worker purges its rows
    vector_count    bigint DEFAULT 0,     -- refreshed from shared memory by the worker
    storage_bytes   bigint DEFAULT 0,
    last_access     timestamptz
);
CREATE INDEX idx_tenants_isolation ON ruvector.tenants(isolation_level);
CREATE INDEX idx_tenants_suspended ON ruvector.tenants(suspended_at) WHERE suspended_at IS NOT NULL;
ALTER TABLE ruvector.integrity_policies
    ADD FOREIGN KEY (tenant_id) REFERENCES ruvector.tenants(id) ON DELETE CASCADE;

CREATE TABLE ruvector.collections (
    id              serial PRIMARY KEY,
    name            text NOT NULL,
    tenant_id       text REFERENCES ruvector.tenants(id) ON DELETE CASCADE,  -- NULL = shared
    dimensions      integer CHECK (dimensions BETWEEN 1 AND 16000),
    metric          text NOT NULL DEFAULT 'l2' CHECK (metric IN ('l2', 'cosine', 'ip', 'l1')),
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (name, tenant_id)
);

-- Tables registered with ruvector_enable_tenant_rls.
CREATE TABLE ruvector.tenant_tables (
    relid           regclass PRIMARY KEY,
    tenant_column   name NOT NULL,
    registered_at   timestamptz NOT NULL DEFAULT now()
);

-- Login roles bound to one tenant (ruvector_tenant_bind_role).
CREATE TABLE ruvector.tenant_role_bindings (
    role_name       name PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES ruvector.tenants(id) ON DELETE CASCADE,
    bound_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ruvector.tenant_audit_log (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL,
    operation       text NOT NULL,      -- search, insert, update, delete, lifecycle, refused, ...
    user_id         text,
    details         jsonb,
    ip_address      inet,
    created_at      timestamptz DEFAULT now()
);
CREATE INDEX idx_tenant_audit_log_tenant ON ruvector.tenant_audit_log (tenant_id, created_at);

-- Every change of a tenant's integrity state, and every operator override.
CREATE TABLE ruvector.integrity_events (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES ruvector.tenants(id) ON DELETE CASCADE,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    lambda_cut  real,
    reason      text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX idx_integrity_events_tenant ON ruvector.integrity_events (tenant_id, at);

-- Every move of a tenant between isolation levels, asked for by an operator or by the
-- isolation policy: the history, and the state of the one in progress (at most one per
-- tenant). A background worker carries them out.
CREATE TABLE ruvector.tenant_migrations (
    id          bigserial PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES ruvector.tenants(id) ON DELETE CASCADE,
    from_level  text NOT NULL,
    to_level    text NOT NULL CHECK (to_level IN ('shared', 'partition', 'dedicated')),
    reason      text NOT NULL DEFAULT 'operator' CHECK (reason IN ('operator', 'policy')),
    -- An operator's move is kept: the policy leaves the tenant alone while its latest
    -- migration is pinned.
    pinned      boolean NOT NULL DEFAULT false,
    options     jsonb NOT NULL DEFAULT '{}'::jsonb,
    phase       text NOT NULL DEFAULT 'pending'
                CHECK (phase IN ('pending', 'copying', 'catching_up', 'switching', 'done', 'failed')),
    rows_copied bigint NOT NULL DEFAULT 0,
    rows_total  bigint,
    worker_pid  integer,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    error       text
);
CREATE UNIQUE INDEX idx_tenant_migrations_running ON ruvector.tenant_migrations (tenant_id)
    WHERE phase NOT IN ('done', 'failed');

-- The isolation policy applied by the background worker (one row).
CREATE TABLE ruvector.isolation_policy (
    singleton                   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    auto_promote_to_partition   bigint NOT NULL DEFAULT 100000 CHECK (auto_promote_to_partition > 0),
    auto_promote_to_dedicated   bigint NOT NULL DEFAULT 10000000 CHECK (auto_promote_to_dedicated > 0),
    auto_demote_from_dedicated  bigint NOT NULL DEFAULT 5000000 CHECK (auto_demote_from_dedicated >= 0),
    auto_demote_from_partition  bigint NOT NULL DEFAULT 50000 CHECK (auto_demote_from_partition >= 0),
    check_interval              interval NOT NULL DEFAULT '1 hour' CHECK (check_interval > interval '0'),
    enabled                     boolean NOT NULL DEFAULT true,
    last_check                  timestamptz,
    CHECK (auto_promote_to_partition <= auto_promote_to_dedicated),
    CHECK (auto_demote_from_dedicated < auto_promote_to_dedicated),
    CHECK (auto_demote_from_partition < auto_promote_to_partition)
);
INSERT INTO ruvector.isolation_policy DEFAULT VALUES;

CREATE TABLE ruvector.tenant_contracted_graph (
    tenant_id       text NOT NULL REFERENCES ruvector.tenants(id) ON DELETE CASCADE,
    collection_id   integer NOT NULL,
    node_type       text NOT NULL,
    node_id         bigint NOT NULL,
    node_data       jsonb NOT NULL DEFAULT '{}'::jsonb,
    edges           jsonb NOT NULL DEFAULT '[]'::jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, collection_id, node_type, node_id)
);

-- Physical erasure of deleted tenants' rows: one row per table a hard delete or a purge
-- removed rows from. The maintenance worker VACUUMs the table; once a VACUUM that started
-- after the deleting transaction was invisible to everyone has finished, the rows' tuples
-- are gone from the table and its indexes, and vacuumed_at is set.
CREATE TABLE ruvector.tenant_erasures (
    tenant_id       text NOT NULL,
    relid           regclass NOT NULL,
    rows_deleted    bigint NOT NULL,
    deleted_at      timestamptz NOT NULL DEFAULT now(),
    delete_xid      xid8 NOT NULL DEFAULT pg_current_xact_id(),
    vacuumed_at     timestamptz,
    PRIMARY KEY (tenant_id, relid, delete_xid)
);

-- Backup and restore --------------------------------------------------------------------

-- pg_dump dumps the catalog's rows with the database (extension configuration tables), and
-- pg_restore loads them through the triggers below: the registry learns the tenants, every
-- backend reloads its tenant-table cache, and the rows CREATE EXTENSION put in place (the
-- built-in integrity policy, the isolation policy) take the dumped values instead of
-- colliding with them.
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.collections', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.collections_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_tables', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_role_bindings', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_policies', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_policies_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_audit_log_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_events', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.integrity_events_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_migrations', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_migrations_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.isolation_policy', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_contracted_graph', '');
SELECT pg_catalog.pg_extension_config_dump('ruvector.tenant_erasures', '');

-- A restored row whose key CREATE EXTENSION already inserted replaces that row.
CREATE FUNCTION ruvector._restore_builtin() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'isolation_policy' THEN
        DELETE FROM ruvector.isolation_policy;
    ELSIF EXISTS (SELECT 1 FROM ruvector.integrity_policies WHERE id = NEW.id) THEN
        UPDATE ruvector.integrity_policies SET tenant_id = NEW.tenant_id, collection_id = NEW.collection_id,
            name = NEW.name, threshold_high = NEW.threshold_high, threshold_low = NEW.threshold_low,
            hysteresis = NEW.hysteresis, actions = NEW.actions,
            sample_interval_secs = NEW.sample_interval_secs, created_at = NEW.created_at
        WHERE id = NEW.id;
        RETURN NULL;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER restore_builtin BEFORE INSERT ON ruvector.integrity_policies
    FOR EACH ROW EXECUTE FUNCTION ruvector._restore_builtin();
CREATE TRIGGER restore_builtin BEFORE INSERT ON ruvector.isolation_policy
    FOR EACH ROW EXECUTE FUNCTION ruvector._restore_builtin();

-- Any change of the registered tables or role bindings (a restore included) reaches every
-- backend's cache at commit.
CREATE FUNCTION ruvector._tables_sync() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._tables_changed();
    RETURN NULL;
END $$;
CREATE TRIGGER tables_sync AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ruvector.tenant_tables
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector._tables_sync();
CREATE TRIGGER tables_sync AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON ruvector.tenant_role_bindings
    FOR EACH STATEMENT EXECUTE FUNCTION ruvector._tables_sync();

-- Keep the shared registry in step with every change of a tenant row, whoever makes it.
CREATE FUNCTION ruvector._tenants_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM ruvector._registry_sync(OLD.id, 'deleted', 0, 0, 0, 0, 1, false, true);
        RETURN OLD;
    END IF;
    PERFORM ruvector._registry_sync(NEW.id,
        CASE WHEN NEW.deleted_at IS NOT NULL THEN 'deleted'
             WHEN NEW.suspended_at IS NOT NULL THEN 'suspended'
             ELSE 'active' END,
        NEW.max_vectors, NEW.max_storage_gb, NEW.max_qps, NEW.max_concurrent, NEW.weight,
        TG_OP = 'INSERT', NEW.isolation_level IS DISTINCT FROM 'shared');
    RETURN NEW;
END $$;
CREATE TRIGGER tenants_sync AFTER INSERT OR UPDATE OR DELETE ON ruvector.tenants
    FOR EACH ROW EXECUTE FUNCTION ruvector._tenants_sync();

-- max_collections: collections are rare, so the tenant's row is locked to count exactly.
CREATE FUNCTION ruvector._collections_quota() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lim integer;
    n bigint;
BEGIN
    IF NEW.tenant_id IS NULL OR (TG_OP = 'UPDATE' AND NEW.tenant_id IS NOT DISTINCT FROM OLD.tenant_id) THEN
        RETURN NEW;
    END IF;
    SELECT max_collections INTO lim FROM ruvector.tenants WHERE id = NEW.tenant_id FOR UPDATE;
    SELECT count(*) INTO n FROM ruvector.collections WHERE tenant_id = NEW.tenant_id;
    IF n >= lim THEN
        RAISE EXCEPTION 'tenant "%" has exceeded its collection quota', NEW.tenant_id
            USING ERRCODE = '53400', DETAIL = format('current: %s, maximum: %s', n, lim),
                  HINT = 'Drop a collection, or ask an administrator to raise max_collections.';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER collections_quota BEFORE INSERT OR UPDATE OF tenant_id ON ruvector.collections
    FOR EACH ROW EXECUTE FUNCTION ruvector._collections_quota();

-- Views for tenants and monitoring ----------------------------------------------------------

CREATE VIEW ruvector.my_collections WITH (security_barrier) AS
SELECT * FROM ruvector.collections
WHERE tenant_id = ruvector.current_tenant()
   OR tenant_id IS NULL;
GRANT SELECT ON ruvector.my_collections TO ruvector_user;

-- Quotas: the limits live in ruvector.tenants; usage is live, from shared memory.
CREATE VIEW ruvector.tenant_quotas AS
SELECT t.id AS tenant_id, t.max_vectors, t.max_storage_gb, t.max_qps, t.max_concurrent,
       coalesce(s.current_vectors, 0) AS current_vectors,
       (coalesce(s.storage_bytes, 0) / 1073741824.0)::real AS current_storage_gb,
       -- Statements in the last closed window (ruvector.metrics_window) and when it started;
       -- NULL until a first full window has closed.
       s.window_statements AS request_count,
       s.window_start
FROM ruvector.tenants t
LEFT JOIN ruvector._live_stats() s ON s.tenant_id = t.id
WHERE t.deleted_at IS NULL;

-- Administrators change limits through the view as in ruvector.tenants (the columns granted
-- below; usage columns are read-only).
CREATE FUNCTION ruvector._tenant_quotas_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE ruvector.tenants SET max_vectors = NEW.max_vectors, max_storage_gb = NEW.max_storage_gb,
        max_qps = NEW.max_qps, max_concurrent = NEW.max_concurrent
    WHERE id = OLD.tenant_id;
    RETURN NEW;
END $$;
CREATE TRIGGER tenant_quotas_update INSTEAD OF UPDATE ON ruvector.tenant_quotas
    FOR EACH ROW EXECUTE FUNCTION ruvector._tenant_quotas_update();

CREATE VIEW ruvector.tenant_stats AS
SELECT s.tenant_id, s.state,
       -- Sampled by the integrity monitor; NULL until a sample exists.
       s.integrity_state, s.lambda_cut,
       s.current_vectors, s.reserved_vectors, s.storage_bytes,
       s.searches, s.inserts, s.updates, s.deletes, s.refused,
       CASE WHEN s.searches > 0 THEN s.search_ms_total / s.searches END AS avg_search_latency_ms,
       -- The last closed window (ruvector.metrics_window): latency quantiles (NULL without
       -- searches in it) and searches per second.
       s.search_latency_p50_ms, s.search_latency_p99_ms, s.qps,
       s.searches_last_hour, s.last_access,
       s.admitted, s.rate_limited, s.queued, s.wait_ms_total
FROM ruvector._live_stats() s;

-- A tenant session sees only its own row of the statistics.
CREATE VIEW ruvector.my_tenant_stats WITH (security_barrier) AS
SELECT * FROM ruvector.tenant_stats WHERE tenant_id = ruvector.current_tenant();
GRANT SELECT ON ruvector.my_tenant_stats TO ruvector_user;

GRANT SELECT ON ALL TABLES IN SCHEMA ruvector TO ruvector_admin;
GRANT INSERT, UPDATE, DELETE ON ruvector.tenants, ruvector.collections, ruvector.integrity_policies,
    ruvector.tenant_role_bindings TO ruvector_admin;
GRANT INSERT ON ruvector.tenant_migrations TO ruvector_admin;
-- The specification's tenant tables reference the catalog: FOREIGN KEY (tenant_id)
-- REFERENCES ruvector.tenants(id) ON DELETE CASCADE, made by an ordinary table owner.
GRANT REFERENCES (id) ON ruvector.tenants TO ruvector_user;
GRANT UPDATE ON ruvector.isolation_policy TO ruvector_admin;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA ruvector TO ruvector_admin;
GRANT UPDATE (max_vectors, max_storage_gb, max_qps, max_concurrent) ON ruvector.tenant_quotas TO ruvector_admin;
-- Tenant settings (limits, weight) are changed with UPDATE ruvector.tenants: the change
-- reaches every session at its next statement.
GRANT SET ON PARAMETER ruvector.audit_enabled TO ruvector_admin;

-- Lifecycle -------------------------------------------------------------------------------

CREATE FUNCTION ruvector_tenant_create(p_tenant_id text, p_options jsonb DEFAULT '{}'::jsonb)
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
COMMENT ON FUNCTION ruvector_tenant_create(text, jsonb) IS 'create a tenant (ruvector_admin)';

CREATE FUNCTION ruvector_tenant_suspend(p_tenant_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('suspend a tenant');
    UPDATE ruvector.tenants SET suspended_at = coalesce(suspended_at, now())
    WHERE id = p_tenant_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    PERFORM ruvector._audit(p_tenant_id, 'suspend', '{}');
END $$;

CREATE FUNCTION ruvector_tenant_resume(p_tenant_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('resume a tenant');
    UPDATE ruvector.tenants SET suspended_at = NULL WHERE id = p_tenant_id AND deleted_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    PERFORM ruvector._audit(p_tenant_id, 'resume', '{}');
END $$;

-- Removes a tenant's rows from every tenant table (ruvector_admin only): each table's rows
-- as the table's owner, in a security-restricted operation, so an owner's trigger never runs
-- with more rights than the owner's; records each removal in ruvector.tenant_erasures.
CREATE FUNCTION ruvector._delete_tenant_rows(p_tenant_id text)
RETURNS TABLE (table_name regclass, rows_deleted bigint)
    AS 'MODULE_PATHNAME', 'rv_delete_tenant_rows' LANGUAGE C VOLATILE STRICT;
REVOKE ALL ON FUNCTION ruvector._delete_tenant_rows(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ruvector._delete_tenant_rows(text) TO ruvector_admin;

-- Soft delete: refused at once, rows purged by the background worker after
-- ruvector.tenant_purge_delay. Hard delete: rows removed from every tenant table now; the
-- worker then vacuums those tables (ruvector_tenant_erasure_status reports when).
CREATE FUNCTION ruvector_tenant_delete(p_tenant_id text, hard boolean DEFAULT false)
RETURNS TABLE (table_name regclass, rows_deleted bigint)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('delete a tenant');
    IF NOT EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = p_tenant_id) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    IF NOT hard THEN
        UPDATE ruvector.tenants
        SET deleted_at = coalesce(deleted_at, now()),
            purge_after = coalesce(purge_after,
                now() + current_setting('ruvector.tenant_purge_delay')::interval)
        WHERE id = p_tenant_id;
        PERFORM ruvector._audit(p_tenant_id, 'delete', '{"hard": false}');
        RETURN;
    END IF;
    -- Refuse the tenant before removing its rows.
    UPDATE ruvector.tenants SET deleted_at = coalesce(deleted_at, now()) WHERE id = p_tenant_id;
    RETURN QUERY SELECT * FROM ruvector._delete_tenant_rows(p_tenant_id);
    DELETE FROM ruvector.collections WHERE tenant_id = p_tenant_id;
    DELETE FROM ruvector.tenants WHERE id = p_tenant_id;
    PERFORM ruvector._audit(p_tenant_id, 'delete', '{"hard": true}');
END $$;

CREATE FUNCTION ruvector_tenants()
RETURNS TABLE (id text, display_name text, state text, isolation_level text, max_vectors bigint,
               current_vectors bigint, max_qps integer, created_at timestamptz,
               suspended_at timestamptz, deleted_at timestamptz)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('list tenants');
    RETURN QUERY
    SELECT t.id, t.display_name,
           CASE WHEN t.deleted_at IS NOT NULL THEN 'deleted'
                WHEN t.suspended_at IS NOT NULL THEN 'suspended' ELSE 'active' END,
           t.isolation_level, t.max_vectors, coalesce(s.current_vectors, 0), t.max_qps,
           t.created_at, t.suspended_at, t.deleted_at
    FROM ruvector.tenants t LEFT JOIN ruvector._live_stats() s ON s.tenant_id = t.id
    ORDER BY t.id;
END $$;

-- Statistics of one tenant: admins may ask about any tenant, a tenant only about itself.
CREATE FUNCTION ruvector_tenant_stats(p_tenant_id text)
RETURNS SETOF ruvector.tenant_stats
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_tenant_id IS NOT DISTINCT FROM ruvector.current_tenant() THEN
        RETURN QUERY SELECT * FROM ruvector.my_tenant_stats;
        RETURN;
    END IF;
    PERFORM ruvector._require_admin('read another tenant''s statistics');
    RETURN QUERY SELECT * FROM ruvector.tenant_stats s WHERE s.tenant_id = p_tenant_id;
END $$;

CREATE FUNCTION ruvector_tenant_bind_role(p_role name, p_tenant_id text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('bind a role to a tenant');
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = p_role) THEN
        RAISE EXCEPTION 'role "%" does not exist', p_role USING ERRCODE = '42704';
    END IF;
    IF (SELECT rolsuper FROM pg_roles WHERE rolname = p_role) THEN
        RAISE EXCEPTION 'cannot bind superuser role "%" to a tenant', p_role USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = p_tenant_id AND deleted_at IS NULL) THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    INSERT INTO ruvector.tenant_role_bindings (role_name, tenant_id) VALUES (p_role, p_tenant_id)
    ON CONFLICT (role_name) DO UPDATE SET tenant_id = excluded.tenant_id, bound_at = now();
    PERFORM ruvector._tables_changed();
END $$;

-- Whether a deleted tenant's rows are physically gone: one row per affected table.
CREATE FUNCTION ruvector_tenant_erasure_status(p_tenant_id text)
RETURNS TABLE (table_name regclass, rows_deleted bigint, deleted_at timestamptz,
               vacuumed_at timestamptz, erased boolean)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('read erasure status');
    RETURN QUERY
    SELECT e.relid, e.rows_deleted, e.deleted_at, e.vacuumed_at, e.vacuumed_at IS NOT NULL
    FROM ruvector.tenant_erasures e WHERE e.tenant_id = p_tenant_id ORDER BY e.deleted_at, e.relid::text;
END $$;
COMMENT ON FUNCTION ruvector_tenant_erasure_status(text) IS 'per table: rows of a deleted tenant removed and vacuumed (ruvector_admin)';

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

-- Collections of the current tenant: created by the tenant itself, within max_collections.
CREATE FUNCTION ruvector._require_tenant() RETURNS text
    AS 'MODULE_PATHNAME', 'rv_require_tenant' LANGUAGE C VOLATILE;
CREATE FUNCTION ruvector_collection_create(p_name text, p_options jsonb DEFAULT '{}'::jsonb)
RETURNS ruvector.collections
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant text := ruvector._require_tenant();
    result ruvector.collections;
BEGIN
    -- Collection metadata is catalog storage outside the tenant's storage quota: bounded.
    IF pg_column_size(p_options->'metadata') > 16384 THEN
        RAISE EXCEPTION 'collection metadata is too large' USING ERRCODE = '54000',
            DETAIL = format('%s bytes; at most 16384.', pg_column_size(p_options->'metadata')),
            HINT = 'Keep large documents in a tenant table, which counts against the storage quota.';
    END IF;
    INSERT INTO ruvector.collections (name, tenant_id, dimensions, metric, metadata)
    VALUES (p_name, tenant, (p_options->>'dimensions')::integer,
            coalesce(p_options->>'metric', 'l2'), coalesce(p_options->'metadata', '{}'::jsonb))
    RETURNING * INTO result;
    PERFORM ruvector._audit(tenant, 'collection_create', jsonb_build_object('name', p_name)::text);
    RETURN result;
END $$;
COMMENT ON FUNCTION ruvector_collection_create(text, jsonb) IS 'create a collection of the current tenant (options: dimensions, metric, metadata)';

CREATE FUNCTION ruvector_collection_drop(p_name text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tenant text := ruvector._require_tenant();
BEGIN
    DELETE FROM ruvector.collections WHERE tenant_id = tenant AND name = p_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'collection "%" does not exist', p_name USING ERRCODE = '42704';
    END IF;
END $$;

CREATE FUNCTION ruvector_admission_status(OUT running integer, OUT waiting integer, OUT capacity integer)
    RETURNS SETOF record
    AS 'MODULE_PATHNAME', 'rv_admission_status' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION ruvector_admission_status() IS 'tenant statements executing, waiting for admission, and the server-wide limit';

CREATE FUNCTION ruvector._integrity_sample(tenant_id text) RETURNS text
    AS 'MODULE_PATHNAME', 'rv_integrity_sample' LANGUAGE C VOLATILE STRICT;
CREATE FUNCTION ruvector._integrity_override(tenant_id text, state text, seconds float8) RETURNS void
    AS 'MODULE_PATHNAME', 'rv_integrity_override' LANGUAGE C VOLATILE STRICT;

-- Samples a tenant's integrity now (its λ_cut from its ruhnsw graphs) and applies the sample
-- to its state machine (ruvector_admin).
CREATE FUNCTION ruvector_tenant_integrity_sample(p_tenant_id text, OUT state text, OUT lambda_cut real)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r text;
BEGIN
    PERFORM ruvector._require_admin('sample a tenant''s integrity');
    r := ruvector._integrity_sample(p_tenant_id);
    state := split_part(r, ' ', 1);
    lambda_cut := split_part(r, ' ', 2)::real;
END $$;

-- Fixes a tenant's integrity state for a while (ruvector_admin); it ends by itself.
CREATE FUNCTION ruvector_tenant_integrity_override(p_tenant_id text, p_state text, p_duration interval)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('override a tenant''s integrity state');
    IF p_duration IS NULL OR p_duration <= interval '0' THEN
        RAISE EXCEPTION 'the override needs a positive duration' USING ERRCODE = '22023';
    END IF;
    PERFORM ruvector._integrity_override(p_tenant_id, p_state, extract(epoch FROM p_duration));
END $$;

-- Isolation levels -------------------------------------------------------------------------

-- Starts moving a tenant to another isolation level and returns at once; the background
-- worker does the work online (ruvector_tenant_migration_status follows it). Options:
-- m, ef_construction and tablespace of the dedicated indexes (default: those of the shared
-- index); pin (default true): the isolation policy leaves the tenant at this level.
CREATE FUNCTION ruvector_tenant_migrate(p_tenant_id text, p_level text, p_options jsonb DEFAULT '{}'::jsonb)
RETURNS ruvector.tenant_migrations
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    current text;
    k text;
    result ruvector.tenant_migrations;
BEGIN
    PERFORM ruvector._require_admin('migrate a tenant');
    IF p_level IS NULL OR p_level NOT IN ('shared', 'partition', 'dedicated') THEN
        RAISE EXCEPTION 'unknown isolation level "%"', p_level USING ERRCODE = '22023',
            HINT = 'Isolation levels: shared, partition, dedicated.';
    END IF;
    IF jsonb_typeof(p_options) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'migration options must be a JSON object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_options) LOOP
        IF k NOT IN ('m', 'ef_construction', 'tablespace', 'pin') THEN
            RAISE EXCEPTION 'unknown migration option "%"', k USING ERRCODE = '22023',
                HINT = 'Known options: m, ef_construction, tablespace, pin.';
        END IF;
    END LOOP;
    SELECT isolation_level INTO current FROM ruvector.tenants
    WHERE id = p_tenant_id AND deleted_at IS NULL FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'tenant "%" does not exist', p_tenant_id USING ERRCODE = '42704';
    END IF;
    IF EXISTS (SELECT 1 FROM ruvector.tenant_migrations
               WHERE tenant_id = p_tenant_id AND phase NOT IN ('done', 'failed')) THEN
        RAISE EXCEPTION 'tenant "%" is already being migrated', p_tenant_id USING ERRCODE = '55006',
            HINT = 'ruvector_tenant_migration_status() shows its progress.';
    END IF;
    -- Even to the level it has: the worker also reconciles indexes made by hand (a
    -- dedicated index created with CREATE INDEX ... WHERE is given up by a move to shared).
    INSERT INTO ruvector.tenant_migrations (tenant_id, from_level, to_level, options, pinned)
    VALUES (p_tenant_id, current, p_level, p_options, coalesce((p_options->>'pin')::boolean, true))
    RETURNING * INTO result;
    PERFORM ruvector._audit(p_tenant_id, 'migrate', jsonb_build_object('from', current, 'to', p_level)::text);
    PERFORM ruvector._wake_maintenance();
    RETURN result;
END $$;
COMMENT ON FUNCTION ruvector_tenant_migrate(text, text, jsonb) IS 'move a tenant to another isolation level online (ruvector_admin); returns at once';

CREATE FUNCTION ruvector_tenant_isolate(p_tenant_id text) RETURNS ruvector.tenant_migrations
LANGUAGE sql SET search_path = pg_catalog, pg_temp
RETURN ruvector_tenant_migrate(p_tenant_id, 'dedicated');
COMMENT ON FUNCTION ruvector_tenant_isolate(text) IS 'give a tenant dedicated indexes of its own, online (ruvector_admin)';

-- The tenant's latest migration: the phase and the rows copied so far come from the running
-- index build (pg_stat_progress_create_index) while there is one.
CREATE FUNCTION ruvector_tenant_migration_status(p_tenant_id text)
RETURNS TABLE (tenant_id text, from_level text, to_level text, reason text, phase text,
               rows_copied bigint, rows_total bigint, started_at timestamptz,
               finished_at timestamptz, error text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ruvector._require_admin('read a tenant''s migration status');
    RETURN QUERY
    SELECT m.tenant_id, m.from_level, m.to_level, m.reason,
           CASE WHEN m.phase IN ('copying', 'catching_up') AND p.pid IS NOT NULL THEN
                CASE WHEN p.phase LIKE 'building index%' THEN 'copying'
                     WHEN p.phase LIKE 'index validation%' OR p.phase LIKE 'waiting for writers before validation'
                          OR p.phase LIKE 'waiting for old snapshots' THEN 'catching_up'
                     ELSE m.phase END
                ELSE m.phase END,
           CASE WHEN p.pid IS NOT NULL AND p.phase LIKE 'building index%'
                THEN greatest(m.rows_copied, p.tuples_done) ELSE m.rows_copied END,
           m.rows_total, m.started_at, m.finished_at, m.error
    FROM ruvector.tenant_migrations m
    LEFT JOIN pg_stat_progress_create_index p ON p.pid = m.worker_pid AND m.phase NOT IN ('done', 'failed')
    WHERE m.tenant_id = p_tenant_id
    ORDER BY m.id DESC LIMIT 1;
END $$;
COMMENT ON FUNCTION ruvector_tenant_migration_status(text) IS 'the latest isolation-level migration of a tenant and its progress (ruvector_admin)';

-- Sets the isolation policy (keys left out keep their value): promotion thresholds in
-- vectors, demotion thresholds below them (the gap keeps a tenant from flapping), the
-- interval between checks, and whether the policy is applied at all.
CREATE FUNCTION ruvector_tenant_set_policy(p_policy jsonb) RETURNS ruvector.isolation_policy
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    k text;
    result ruvector.isolation_policy;
BEGIN
    PERFORM ruvector._require_admin('set the isolation policy');
    IF jsonb_typeof(p_policy) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the policy must be a JSON object' USING ERRCODE = '22023';
    END IF;
    FOR k IN SELECT jsonb_object_keys(p_policy) LOOP
        IF k NOT IN ('auto_promote_to_partition', 'auto_promote_to_dedicated', 'auto_demote_from_dedicated',
                     'auto_demote_from_partition', 'check_interval', 'enabled') THEN
            RAISE EXCEPTION 'unknown policy key "%"', k USING ERRCODE = '22023',
                HINT = 'Known keys: auto_promote_to_partition, auto_promote_to_dedicated, auto_demote_from_dedicated, auto_demote_from_partition, check_interval, enabled.';
        END IF;
    END LOOP;
    UPDATE ruvector.isolation_policy SET
        auto_promote_to_partition = coalesce((p_policy->>'auto_promote_to_partition')::bigint, auto_promote_to_partition),
        auto_promote_to_dedicated = coalesce((p_policy->>'auto_promote_to_dedicated')::bigint, auto_promote_to_dedicated),
        auto_demote_from_dedicated = coalesce((p_policy->>'auto_demote_from_dedicated')::bigint, auto_demote_from_dedicated),
        auto_demote_from_partition = coalesce((p_policy->>'auto_demote_from_partition')::bigint, auto_demote_from_partition),
        check_interval = coalesce((p_policy->>'check_interval')::interval, check_interval),
        enabled = coalesce((p_policy->>'enabled')::boolean, enabled),
        last_check = NULL
    RETURNING * INTO result;
    PERFORM ruvector._audit('*', 'set_policy', p_policy::text);
    RETURN result;
END $$;
COMMENT ON FUNCTION ruvector_tenant_set_policy(jsonb) IS 'set the automatic promotion and demotion policy (ruvector_admin)';

-- Run by the maintenance worker: when the policy's interval has passed, starts the
-- migrations it calls for (reason 'policy') and returns how many.
CREATE FUNCTION ruvector._apply_isolation_policy() RETURNS integer
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p ruvector.isolation_policy;
    started integer := 0;
    t record;
BEGIN
    SELECT * INTO p FROM ruvector.isolation_policy FOR UPDATE;
    IF NOT FOUND OR NOT p.enabled OR (p.last_check IS NOT NULL AND p.last_check + p.check_interval > now()) THEN
        RETURN 0;
    END IF;
    UPDATE ruvector.isolation_policy SET last_check = now();
    FOR t IN
        SELECT x.id, x.isolation_level AS level,
               CASE WHEN s.current_vectors >= p.auto_promote_to_dedicated THEN 'dedicated'
                    WHEN s.current_vectors >= p.auto_promote_to_partition
                         AND x.isolation_level = 'shared' THEN 'partition'
                    WHEN x.isolation_level = 'dedicated' AND s.current_vectors < p.auto_demote_from_dedicated
                         THEN CASE WHEN s.current_vectors < p.auto_demote_from_partition THEN 'shared' ELSE 'partition' END
                    WHEN x.isolation_level = 'partition' AND s.current_vectors < p.auto_demote_from_partition
                         THEN 'shared'
                    ELSE x.isolation_level END AS target
        FROM ruvector.tenants x JOIN ruvector._live_stats() s ON s.tenant_id = x.id
        WHERE x.deleted_at IS NULL
          AND NOT EXISTS (SELECT 1 FROM ruvector.tenant_migrations m
                          WHERE m.tenant_id = x.id AND m.phase NOT IN ('done', 'failed'))
          AND NOT coalesce((SELECT m.pinned FROM ruvector.tenant_migrations m
                            WHERE m.tenant_id = x.id ORDER BY m.id DESC LIMIT 1), false)
    LOOP
        CONTINUE WHEN t.target = t.level;
        INSERT INTO ruvector.tenant_migrations (tenant_id, from_level, to_level, reason)
        VALUES (t.id, t.level, t.target, 'policy');
        PERFORM ruvector._audit(t.id, 'migrate', jsonb_build_object('from', t.level, 'to', t.target, 'reason', 'policy')::text);
        started := started + 1;
    END LOOP;
    RETURN started;
END $$;

CREATE FUNCTION ruvector_audit_flush() RETURNS bigint
    AS 'MODULE_PATHNAME', 'rv_audit_flush' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION ruvector_audit_flush() IS 'write queued refusals of this database to ruvector.tenant_audit_log now (ruvector_admin)';

-- Run by the maintenance worker: purge soft-deleted tenants whose delay has passed, and copy
-- live counters into ruvector.tenants.
CREATE FUNCTION ruvector._maintenance() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    due record;
BEGIN
    FOR due IN SELECT id FROM ruvector.tenants
               WHERE deleted_at IS NOT NULL AND purge_after IS NOT NULL AND purge_after <= now() LOOP
        PERFORM ruvector._delete_tenant_rows(due.id);
        DELETE FROM ruvector.collections WHERE tenant_id = due.id;
        DELETE FROM ruvector.tenants WHERE id = due.id;
        PERFORM ruvector._audit(due.id, 'purge', '{}');
    END LOOP;
    UPDATE ruvector.tenants t
    SET vector_count = s.current_vectors, storage_bytes = s.storage_bytes, last_access = s.last_access
    FROM ruvector._live_stats() s
    WHERE s.tenant_id = t.id
      AND (t.vector_count, t.storage_bytes, t.last_access)
          IS DISTINCT FROM (s.current_vectors, s.storage_bytes, s.last_access);
END $$;
REVOKE ALL ON FUNCTION ruvector._maintenance() FROM PUBLIC;

-- RLS -------------------------------------------------------------------------------------

-- Makes an ordinary table a tenant table (its owner only): enables and forces row-level
-- security with the policies tenant_isolation and admin_bypass, installs the quota trigger,
-- registers the table and counts the rows it holds. Refuses partitioned tables, partitions,
-- inheritance, temporary tables, views, materialized views and foreign tables.
CREATE FUNCTION ruvector_enable_tenant_rls(p_table_name text, p_tenant_column text DEFAULT 'tenant_id')
RETURNS void
    AS 'MODULE_PATHNAME', 'rv_enable_tenant_rls' LANGUAGE C VOLATILE STRICT;
COMMENT ON FUNCTION ruvector_enable_tenant_rls(text, text) IS 'confine a table to the current tenant (RLS, FORCE, context checks, quotas)';

-- A dropped tenant table leaves ruvector.tenant_tables with it.
CREATE FUNCTION ruvector._on_sql_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_dropped_objects() d
               JOIN ruvector.tenant_tables t ON t.relid = d.objid
               WHERE d.classid = 'pg_class'::regclass) THEN
        DELETE FROM ruvector.tenant_tables t USING pg_event_trigger_dropped_objects() d
        WHERE d.classid = 'pg_class'::regclass AND t.relid = d.objid;
        PERFORM ruvector._tables_changed();
    END IF;
END $$;
CREATE EVENT TRIGGER ruvector_drop_tenant_table ON sql_drop
    EXECUTE FUNCTION ruvector._on_sql_drop();

-- Internal functions are not executable by PUBLIC. _require_admin and _check_tenant_id stay
-- open: they only check the caller, and every lifecycle function calls them first, so a
-- non-admin gets the explanatory 42501 from them. Trigger functions need no EXECUTE right to
-- fire, only to be attached, which is then left to the extension.
REVOKE EXECUTE ON FUNCTION
    ruvector._registry_sync(text, text, bigint, real, integer, integer, real, boolean, boolean),
    ruvector._tables_changed(), ruvector._quota_trigger(), ruvector._audit(text, text, text),
    ruvector._live_stats(), ruvector._require_tenant(), ruvector._maintenance(),
    ruvector._tenants_sync(), ruvector._collections_quota(), ruvector._on_sql_drop(),
    ruvector._integrity_sample(text), ruvector._integrity_override(text, text, float8),
    ruvector._wake_maintenance(), ruvector._apply_isolation_policy(),
    ruvector._restore_builtin(), ruvector._tables_sync(), ruvector._tenant_quotas_update()
    FROM PUBLIC;
-- Lifecycle functions run as their (admin) caller and call these.
GRANT EXECUTE ON FUNCTION
    ruvector._registry_sync(text, text, bigint, real, integer, integer, real, boolean, boolean),
    ruvector._tables_changed(), ruvector._audit(text, text, text),
    ruvector._integrity_sample(text), ruvector._integrity_override(text, text, float8),
    ruvector._wake_maintenance()
    TO ruvector_admin;
-- The statistics views run _live_stats() as their reader: every tenant for admins, the
-- running statement's tenant for everyone else.
GRANT EXECUTE ON FUNCTION ruvector._live_stats() TO ruvector_admin, ruvector_user;

-- Every backend rebuilds its tenant-table cache once the extension exists.
SELECT ruvector._tables_changed();
