"""kill -9 of the whole server in the middle of each kind of write: tenant inserts, deletes,
VACUUM, a ruhnsw index build and a hard tenant deletion, in several rounds at random points.
After every restart: each index passes ruvector_index_check, no committed row is lost and no
uncommitted one appears, every tenant's quota usage equals its rows in the table, and the
registry's tenants are the catalog's.
"""

import random
import threading
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from cluster_control import kill_9_server, start_server
from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_resilience"
DIMS = 16
TENANTS = ["k0", "k1", "k2"]
ROUNDS = 3
WORKLOADS = ["insert", "delete", "vacuum", "index build", "tenant deletion"]


def vectors(n, rng):
    return rng.standard_normal((n, DIMS)).astype(np.float32)


def connect(tenant=None, user="rv_app"):
    c = psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(DB), user=user), autocommit=True)
    register_vector(c)
    if tenant:
        c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def superuser():
    c = psycopg.connect(admin_dsn(DB), autocommit=True)
    register_vector(c)
    c.execute("SET ruvector.tenant_id = '*'")
    return c


@pytest.fixture
def db():
    su = fresh_database(DB)
    su.execute(f"""CREATE TABLE docs (
                       id bigint NOT NULL,
                       tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                       vec vector({DIMS}),
                       PRIMARY KEY (tenant_id, id))""")
    su.execute("GRANT SELECT, INSERT, DELETE ON docs TO rv_app")
    su.execute("SELECT ruvector_enable_tenant_rls('docs')")
    su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops)")
    su.close()
    yield
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


class Ledger:
    """What the workload knows for certain: rows whose INSERT committed and rows whose DELETE
    committed (a statement cut off by the kill is in neither)."""

    def __init__(self):
        self.present, self.gone = set(), set()
        self.lock = threading.Lock()


def insert_rows(tenant, ids, rng, ledger):
    with connect(tenant) as c:
        for start in range(0, len(ids), 50):
            chunk = ids[start:start + 50]
            vs = vectors(len(chunk), rng)
            c.cursor().executemany("INSERT INTO docs (id, vec) VALUES (%s, %s)", list(zip(chunk, vs)))
            with ledger.lock:
                ledger.present.update((tenant, i) for i in chunk)


def workload(kind, su_rows, rng, ledger, stop, errors):
    """Runs one kind of write until the server dies (or `stop`); records what committed."""
    try:
        if kind == "insert":
            tenant = rng.choice(TENANTS[:2])
            base = int(time.time() * 1000) % 10**9 * 1000
            n = 0
            while not stop.is_set():
                insert_rows(tenant, list(range(base + n, base + n + 50)), rng, ledger)
                n += 50
        elif kind == "delete":
            tenant = TENANTS[0]
            with connect(tenant) as c:
                for t, i in su_rows:
                    if stop.is_set():
                        break
                    if t == tenant:
                        c.execute("DELETE FROM docs WHERE id = %s", (i,))
                        with ledger.lock:
                            ledger.present.discard((t, i))
                            ledger.gone.add((t, i))
        elif kind == "vacuum":
            with superuser() as c:
                while not stop.is_set():
                    c.execute("VACUUM docs")
        elif kind == "index build":
            with superuser() as c:
                c.execute("DROP INDEX IF EXISTS docs_vec_build")
                while not stop.is_set():
                    c.execute("CREATE INDEX docs_vec_build ON docs USING ruhnsw (vec vector_l2_ops) WITH (m = 24)")
                    c.execute("DROP INDEX docs_vec_build")
        elif kind == "tenant deletion":
            with superuser() as c:
                c.execute("SELECT ruvector_tenant_delete('k2', hard => true)")
            with ledger.lock:
                ledger.gone.update(r for r in ledger.present if r[0] == "k2")
                ledger.present.difference_update(ledger.gone)
    except psycopg.OperationalError:
        pass  # the server was killed under it
    except Exception as e:  # noqa: BLE001 - reported by the test
        errors.append(e)


def check(ledger, round_, kind):
    with superuser() as su:
        rows = set(su.execute("SELECT tenant_id, id FROM docs").fetchall())
        lost = ledger.present - rows
        assert not lost, f"round {round_}, {kind}: committed rows lost: {sorted(lost)[:5]}"
        back = ledger.gone & rows
        assert not back, f"round {round_}, {kind}: deleted rows back: {sorted(back)[:5]}"
        for (index,) in su.execute("SELECT indexrelid::regclass::text FROM pg_index i JOIN pg_class c "
                                   "ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                                   "WHERE a.amname = 'ruhnsw' AND i.indrelid = 'docs'::regclass").fetchall():
            failed = su.execute('SELECT "check", detail FROM ruvector_index_check(%s) WHERE NOT ok', (index,)).fetchall()
            assert not failed, f"round {round_}, {kind}: {index}: {failed}"
        counts = dict(su.execute("SELECT tenant_id, count(*) FROM docs GROUP BY 1").fetchall())
        usage = dict(su.execute("SELECT tenant_id, current_vectors FROM ruvector.tenant_quotas").fetchall())
        catalog = dict(su.execute(
            "SELECT id, CASE WHEN deleted_at IS NOT NULL THEN 'deleted' WHEN suspended_at IS NOT NULL "
            "THEN 'suspended' ELSE 'active' END FROM ruvector.tenants").fetchall())
        registry = dict(su.execute("SELECT tenant_id, state FROM ruvector._live_stats()").fetchall())
        assert {t: registry.get(t) for t in catalog} == catalog, (
            f"round {round_}, {kind}: registry {registry} catalog {catalog}")
        assert all(s == "deleted" for t, s in registry.items() if t not in catalog), registry
        for tenant in catalog:
            assert usage.get(tenant, 0) == counts.get(tenant, 0), (
                f"round {round_}, {kind}: {tenant} usage {usage.get(tenant)} rows {counts.get(tenant, 0)}")
        return rows


def test_kill_9_during_every_kind_of_write_loses_nothing_committed(db):
    rng = random.Random(20261201)
    nprng = np.random.default_rng(7)
    ledger = Ledger()
    with superuser() as su:
        for t in TENANTS:
            su.execute("SELECT ruvector_tenant_create(%s, '{\"max_vectors\": 1000000, \"max_qps\": 0}')", (t,))
    for t in TENANTS:
        insert_rows(t, list(range(1, 401)), nprng, ledger)
    for round_ in range(ROUNDS):
        for kind in WORKLOADS:
            if kind == "tenant deletion":
                with superuser() as su:
                    if not su.execute("SELECT 1 FROM ruvector.tenants WHERE id = 'k2'").fetchone():
                        su.execute("SELECT ruvector_tenant_create('k2', '{\"max_vectors\": 1000000, \"max_qps\": 0}')")
                insert_rows("k2", list(range(10_000 * (round_ + 1), 10_000 * (round_ + 1) + 2000)), nprng, ledger)
            with superuser() as su:
                rows = sorted(su.execute("SELECT tenant_id, id FROM docs").fetchall())
            stop, errors = threading.Event(), []
            worker = threading.Thread(target=workload, args=(kind, rows, nprng, ledger, stop, errors))
            worker.start()
            time.sleep(rng.uniform(0.05, 0.8))
            kill_9_server()
            stop.set()
            worker.join(timeout=60)
            assert not worker.is_alive(), f"round {round_}, {kind}: the workload did not notice the kill"
            assert not errors, f"round {round_}, {kind}: {errors}"
            start_server()
            check(ledger, round_, kind)
    # After all that, the tenants still work: a search returns the tenant's own nearest rows.
    for tenant in ("k0", "k1"):
        with connect(tenant) as c:
            q = vectors(1, nprng)[0]
            got = c.execute("SELECT id, tenant_id FROM docs ORDER BY vec <-> %s LIMIT 10", (q,)).fetchall()
            c.execute("SET enable_indexscan = off")
            exact = c.execute("SELECT id, tenant_id FROM docs ORDER BY vec <-> %s LIMIT 10", (q,)).fetchall()
            assert len(exact) == min(10, sum(1 for t, _ in ledger.present if t == tenant))
            assert got == exact, f"{tenant}: the index answers as an exact scan"
