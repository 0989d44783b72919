"""pg_dump / pg_restore keeps every tenant: a database with tenants, a bound role, collections,
policies, a tenant table with a tenant-keyed index and a dedicated index, dumped with the
server's own pg_dump and restored into a fresh cluster, answers the application exactly as
before, and the restored catalog is live (the registry knows the tenants, limits hold, the
dedicated index is routed to)."""

import os
import subprocess
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from cluster_control import pg15, stop_and_remove
from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_dump"
DIMS = 8
PORT = 28822


def clustered(n, seed):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(1).normal(0, 3, (6, DIMS))
    return (centres[rng.integers(0, 6, n)] + rng.normal(0, 1, (n, DIMS))).astype(np.float32)


def connect(dsn, tenant=None):
    c = psycopg.connect(dsn, autocommit=True)
    register_vector(c)
    if tenant:
        c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def answers(dsn, tenant, queries, user="rv_app"):
    with connect(psycopg.conninfo.make_conninfo(dsn, user=user), tenant) as c:
        return [[r[0] for r in c.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 5", (q,))]
                for q in queries]


def catalog(dsn):
    with connect(dsn, "*") as c:
        return {
            "tenants": c.execute("SELECT id, max_vectors, max_qps, isolation_level, suspended_at IS NOT NULL "
                                 "FROM ruvector.tenants ORDER BY id").fetchall(),
            "bindings": c.execute("SELECT role_name::text, tenant_id FROM ruvector.tenant_role_bindings").fetchall(),
            "collections": c.execute("SELECT name, tenant_id, dimensions FROM ruvector.collections ORDER BY name").fetchall(),
            "tables": c.execute("SELECT relid::text, tenant_column::text FROM ruvector.tenant_tables").fetchall(),
            "policies": c.execute("SELECT name, tenant_id, threshold_high FROM ruvector.integrity_policies ORDER BY name").fetchall(),
            "isolation": c.execute("SELECT auto_promote_to_partition, enabled FROM ruvector.isolation_policy").fetchall(),
            "audit": c.execute("SELECT tenant_id, operation FROM ruvector.tenant_audit_log ORDER BY id").fetchall(),
            "migrations": c.execute("SELECT tenant_id, to_level, phase FROM ruvector.tenant_migrations ORDER BY id").fetchall(),
        }


@pytest.fixture(scope="module")
def source():
    with fresh_database(DB) as su:
        su.execute("""DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rv_app_bound')
                      THEN CREATE ROLE rv_app_bound LOGIN; END IF; END $$""")
        su.execute("GRANT ruvector_user TO rv_app_bound")
        su.execute("SET ruvector.audit_enabled = on")
        su.execute("SELECT ruvector_tenant_create('a', '{\"max_vectors\": 1000, \"max_qps\": 0}')")
        su.execute("SELECT ruvector_tenant_create('b', '{\"max_qps\": 0}')")
        su.execute("SELECT ruvector_tenant_create('c', '{\"max_qps\": 0}')")
        su.execute("SELECT ruvector_tenant_suspend('c')")
        su.execute("SELECT ruvector_tenant_bind_role('rv_app_bound', 'b')")
        su.execute("SELECT ruvector_tenant_set_policy('{\"auto_promote_to_partition\": 123456, \"enabled\": false}')")
        su.execute("INSERT INTO ruvector.integrity_policies (tenant_id, name, threshold_high, threshold_low) "
                   "VALUES ('a', 'strict', 0.6, 0.3)")
        su.execute("CREATE TABLE docs (id bigserial, tenant_id text NOT NULL "
                   "DEFAULT current_setting('ruvector.tenant_id'), vec vector(8), PRIMARY KEY (tenant_id, id))")
        su.execute("SELECT ruvector_enable_tenant_rls('docs')")
        su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops)")
        su.execute("CREATE INDEX docs_b ON docs USING ruhnsw (vec vector_l2_ops) WHERE tenant_id = 'b'")
        su.execute("GRANT SELECT, INSERT ON docs TO rv_app, rv_app_bound")
        su.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO rv_app, rv_app_bound")
    dsn = admin_dsn(DB)
    for i, t in enumerate("ab"):
        with connect(psycopg.conninfo.make_conninfo(dsn, user="rv_app"), t) as c:
            c.cursor().executemany("INSERT INTO docs (vec) VALUES (%s)", [(v,) for v in clustered(900, seed=i)])
            c.execute("SELECT ruvector_collection_create(%s, '{\"dimensions\": 8}')", (f"col_{t}",))
    with connect(dsn, "*") as c:
        c.execute("ANALYZE docs")
    return dsn


@pytest.fixture(scope="module")
def restored(source):
    data = os.environ["RUVECTOR_PG15_DATA"] + "-restore"
    work = data + "-work"
    dump = os.path.join(work, "ruvector.dump")
    subprocess.run(["rm", "-rf", data, work], check=True)
    for d in (data, work):
        subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", d], check=True)
    with psycopg.connect(source) as c:
        sock = c.info.host
        port = c.info.port
    pg15("pg_dump", "-h", sock, "-p", str(port), "-U", "postgres", "-Fc", "-f", dump, DB)
    pg15("initdb", "-D", data, "-U", "postgres", "--auth=trust")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {PORT}\nunix_socket_directories = '{sock}'\nlisten_addresses = ''\n"
                "shared_preload_libraries = 'ruvector'\nfsync = off\n")
    pg15("pg_ctl", "-D", data, "-l", os.path.join(data, "server.log"), "-w", "-t", "60", "start")
    try:
        target = psycopg.conninfo.make_conninfo(source, port=PORT, dbname="postgres")
        with psycopg.connect(target, autocommit=True) as c:
            c.execute(f"CREATE DATABASE {DB}")
            for role in ("rv_app", "rv_app_bound"):
                c.execute(f"CREATE ROLE {role} LOGIN")
        pg15("pg_restore", "-h", sock, "-p", str(PORT), "-U", "postgres", "-d", DB, "--exit-on-error", dump)
        with psycopg.connect(target, autocommit=True) as c:
            c.execute("GRANT ruvector_user TO rv_app, rv_app_bound")
        with connect(psycopg.conninfo.make_conninfo(target, dbname=DB), "*") as c:
            c.execute("ANALYZE")  # pg_restore brings no planner statistics
        yield psycopg.conninfo.make_conninfo(target, dbname=DB)
    finally:
        stop_and_remove(data, work)


def test_the_restored_catalog_is_the_dumped_one(source, restored):
    before, after = catalog(source), catalog(restored)
    assert after == before
    assert [p for p in after["policies"] if p[0] == "standard"] == [("standard", None, pytest.approx(0.4))]
    assert after["isolation"] == [(123456, False)]


def test_the_application_gets_the_same_answers(source, restored):
    queries = clustered(10, seed=42)
    for t in "ab":
        assert answers(restored, t, queries) == answers(source, t, queries)
    # The bound role is still bound to its tenant.
    assert answers(restored, "b", queries, user="rv_app_bound") == answers(source, "b", queries)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        connect(psycopg.conninfo.make_conninfo(restored, user="rv_app_bound"), "a")


def test_the_restored_tenants_are_live(restored):
    app = psycopg.conninfo.make_conninfo(restored, user="rv_app")
    # Suspended stays suspended.
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
        connect(app, "c")
    # The registry counts the restored rows: tenant a (limit 1000, 900 rows) has room for 100.
    with connect(app, "a") as c:
        c.cursor().executemany("INSERT INTO docs (vec) VALUES (%s)", [(v,) for v in clustered(100, seed=7)])
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            c.execute("INSERT INTO docs (vec) VALUES (%s)", (clustered(1, seed=8)[0],))
    # The dedicated index made by DDL is restored and answers tenant b.
    with connect(restored, "*") as su:
        before = su.execute("SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = 'docs_b'").fetchone()[0]
    with connect(app, "b") as c:
        plan = "\n".join(r[0] for r in c.execute("EXPLAIN SELECT id FROM docs ORDER BY vec <-> %s LIMIT 5",
                                                 (clustered(1, seed=9)[0],)))
        assert "docs_vec" in plan, plan
        for q in clustered(5, seed=9):
            c.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 5", (q,)).fetchall()
        c.execute("SELECT pg_stat_force_next_flush()")
    deadline = time.monotonic() + 10
    with connect(restored, "*") as su:
        while su.execute("SELECT pg_stat_clear_snapshot(), idx_scan FROM pg_stat_user_indexes "
                         "WHERE indexrelname = 'docs_b'").fetchone()[1] < before + 5:
            assert time.monotonic() < deadline, "the restored dedicated index answers tenant b"
            time.sleep(0.2)
