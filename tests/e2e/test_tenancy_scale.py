"""Scale and durability of the tenant registry: 100,000 tenants, and counters rebuilt from
the tables after a crash."""

import os
import subprocess
import time

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, dsn, fresh_database

DB = "ruvector_scale"


def server(action, *args):
    data, bindir = os.environ.get("RUVECTOR_PG15_DATA"), os.environ.get("RUVECTOR_PG15_BIN")
    if not data or not bindir:
        pytest.fail("RUVECTOR_PG15_DATA / RUVECTOR_PG15_BIN are not set; run scripts/test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_")}
    subprocess.run(
        ["runuser", "-u", "postgres", "--", f"{bindir}/pg_ctl", "-D", data, "-w", "-t", "60", action, *args],
        check=True, stdout=subprocess.DEVNULL, env=env,
    )


@pytest.fixture(scope="module")
def database():
    with fresh_database(DB) as c:
        c.execute("CREATE TABLE items (id bigserial PRIMARY KEY, tenant_id text NOT NULL "
                  "DEFAULT current_setting('ruvector.tenant_id'), vec vector(3))")
        c.execute("SELECT ruvector_enable_tenant_rls('items')")
        c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON items TO ruvector_user")
        c.execute("GRANT USAGE ON SEQUENCE items_id_seq TO ruvector_user")
    yield


def test_100000_tenants(database):
    with psycopg.connect(admin_dsn(DB), autocommit=True) as c:
        start = time.monotonic()
        c.execute("SELECT count(ruvector_tenant_create('t' || i)) FROM generate_series(1, 100000) i")
        elapsed = time.monotonic() - start
        print(f"created 100000 tenants in {elapsed:.1f} s")
        assert c.execute("SELECT count(*) FROM ruvector.tenant_stats").fetchone()[0] == 100000
        assert c.execute("SELECT state FROM ruvector.tenant_stats WHERE tenant_id = 't77777'").fetchone()[0] == "active"
    for tenant in ("t1", "t50000", "t100000"):
        with psycopg.connect(dsn("rv_app", DB), autocommit=True) as app:
            app.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
            app.execute("INSERT INTO items (vec) VALUES ('[1,2,3]')")
            assert app.execute("SELECT tenant_id FROM items").fetchall() == [(tenant,)]


def test_counters_are_rebuilt_from_the_tables_after_a_crash(database):
    with psycopg.connect(admin_dsn(DB), autocommit=True) as c:
        c.execute("SELECT ruvector_tenant_create('durable', '{\"max_vectors\": 30}')")
    app = psycopg.connect(dsn("rv_app", DB), autocommit=True)
    app.execute("SET ruvector.tenant_id = 'durable'")
    app.execute("INSERT INTO items (vec) SELECT '[1,1,1]' FROM generate_series(1, 25)")
    app.execute("DELETE FROM items WHERE id = (SELECT min(id) FROM items)")
    # An open transaction holding reservations when the server dies.
    app.execute("BEGIN")
    app.execute("INSERT INTO items (vec) SELECT '[2,2,2]' FROM generate_series(1, 5)")
    server("stop", "-m", "immediate")
    app.close()
    server("start", "-l", os.path.join(os.environ["RUVECTOR_PG15_DATA"], "server.log"))
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as app:
        app.execute("SET ruvector.tenant_id = 'durable'")
        row = app.execute("SELECT current_vectors, reserved_vectors FROM ruvector_tenant_stats('durable')").fetchone()
        assert row == (24, 0), "committed rows counted again, the crashed transaction's reservation gone"
        app.execute("INSERT INTO items (vec) SELECT '[3,3,3]' FROM generate_series(1, 6)")
        with pytest.raises(psycopg.Error) as e:
            app.execute("INSERT INTO items (vec) VALUES ('[4,4,4]')")
        assert e.value.sqlstate == "53400"
        assert app.execute("SELECT count(*) FROM items").fetchone()[0] == 30
