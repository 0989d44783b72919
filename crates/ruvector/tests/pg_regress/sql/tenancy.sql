-- The tenancy SQL surface: lifecycle, the context layer and quotas, allowed and refused
-- paths side by side, each refusal with its SQLSTATE.
SET client_min_messages = warning;
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'regress_app') THEN
        CREATE ROLE regress_app NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END $$;
GRANT ruvector_user TO regress_app;

-- lifecycle
SELECT id, max_vectors, max_qps, isolation_level FROM ruvector_tenant_create('acme', '{"max_vectors": 3, "max_qps": 50}');
SELECT id FROM ruvector_tenant_create('beta');
SELECT ruvector_tenant_create('acme');
\echo :SQLSTATE
SELECT ruvector_tenant_create('bad id');
\echo :SQLSTATE
SELECT ruvector_tenant_create('x', '{"max_vector": 1}');
\echo :SQLSTATE
SELECT ruvector_tenant_suspend('nobody');
\echo :SQLSTATE
SELECT id, state, max_vectors, current_vectors FROM ruvector_tenants() ORDER BY id;

-- a tenant table
CREATE TABLE docs (id serial PRIMARY KEY, tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'), vec vector(2));
SELECT ruvector_enable_tenant_rls('docs');
GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO ruvector_user;
GRANT USAGE ON SEQUENCE docs_id_seq TO ruvector_user;
SELECT relid, tenant_column FROM ruvector.tenant_tables;
SELECT ruvector_enable_tenant_rls('docs', 'no_such_column');
\echo :SQLSTATE

-- the context layer, as the application role
SET ROLE regress_app;
SELECT count(*) FROM docs;
\echo :SQLSTATE
SET ruvector.tenant_id = 'acme corp';
\echo :SQLSTATE
SET ruvector.tenant_id = 'nobody';
\echo :SQLSTATE
SET ruvector.tenant_id = '*';
\echo :SQLSTATE
SET ruvector.tenant_id = 'acme';
SELECT ruvector.current_tenant();
INSERT INTO docs (vec) VALUES ('[1,1]'), ('[2,2]');
INSERT INTO docs (tenant_id, vec) VALUES ('beta', '[3,3]');
\echo :SQLSTATE
INSERT INTO docs (vec) VALUES ('[3,3]'), ('[4,4]');
\echo :SQLSTATE
SELECT tenant_id, vec FROM docs ORDER BY id;
TRUNCATE docs;
\echo :SQLSTATE
SELECT * FROM ruvector.tenants;
\echo :SQLSTATE
SELECT ruvector_tenant_suspend('beta');
\echo :SQLSTATE
SET ruvector.tenant_id = 'beta';
INSERT INTO docs (vec) VALUES ('[5,5]');
SELECT tenant_id, vec FROM docs ORDER BY id;
SELECT tenant_id, current_vectors, inserts FROM ruvector.my_tenant_stats;
RESET ROLE;

-- suspension reaches the next statement
SELECT ruvector_tenant_suspend('beta');
SET ROLE regress_app;
SELECT count(*) FROM docs;
\echo :SQLSTATE
RESET ROLE;
SELECT ruvector_tenant_resume('beta');
SET ROLE regress_app;
SELECT count(*) FROM docs;
RESET ROLE;

-- hard delete
RESET ruvector.tenant_id;
SELECT table_name, rows_deleted FROM ruvector_tenant_delete('acme', hard := true);
SELECT table_name, rows_deleted FROM ruvector_tenant_erasure_status('acme');
SET ruvector.tenant_id = 'acme';
\echo :SQLSTATE
SET ruvector.tenant_id = '*';
SELECT tenant_id, vec FROM docs ORDER BY id;

-- a dropped table leaves the registry
RESET ruvector.tenant_id;
DROP TABLE docs;
SELECT count(*) FROM ruvector.tenant_tables;

-- clean up the cluster-wide role
REVOKE ruvector_user FROM regress_app;
DROP ROLE regress_app;
