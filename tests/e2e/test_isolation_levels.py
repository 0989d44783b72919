"""Isolation levels end to end, as an application and an operator meet them: a partial index
per tenant (the specification's DDL) answers that tenant's searches from unchanged SQL; a
tenant moves shared -> partition -> dedicated -> shared while it inserts and searches, with no
failed statement, no lost row and full recall; a kill -9 in the middle of a migration is
taken up again at restart; 100 dedicated tenants in one table each get exactly their rows; the
policy promotes exactly the tenants above its thresholds.

Everything runs at default settings, through the application role rv_app (no superuser, no
BYPASSRLS) for the tenants' statements.
"""

import threading
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from cluster_control import kill_9_server, standby, start_server, wait_for_replay
from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_levels"
DIMS = 16
SIZES = {"big": 4000, "small": 1500, "other": 500}
QUERY = "SELECT id FROM docs ORDER BY vec <-> %s LIMIT %s"


def app(tenant, db=DB):
    c = psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(db), user="rv_app"), autocommit=True)
    register_vector(c)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def superuser(db=DB):
    c = psycopg.connect(admin_dsn(db), autocommit=True)
    register_vector(c)
    c.execute("SET ruvector.tenant_id = '*'")
    return c


# Topics every tenant's embeddings (and queries) are drawn around, as real tenants' are.
CENTRES = np.random.default_rng(1).normal(0, 3, (12, DIMS))


def clustered(n, seed):
    rng = np.random.default_rng(seed)
    return (CENTRES[rng.integers(0, 12, n)] + rng.normal(0, 1, (n, DIMS))).astype(np.float32)


def make_table(su, tenants):
    su.execute(
        "CREATE TABLE docs (id bigserial, tenant_id text NOT NULL "
        "DEFAULT current_setting('ruvector.tenant_id'), vec vector(16), PRIMARY KEY (tenant_id, id))"
    )
    su.execute("SELECT ruvector_enable_tenant_rls('docs')")
    su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops)")
    su.execute("GRANT SELECT, INSERT, DELETE ON docs TO rv_app")
    su.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO rv_app")
    for t in tenants:
        su.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}')", (t,))


def load(tenant, vectors, db=DB):
    with app(tenant, db) as a, a.cursor() as cur:
        cur.executemany("INSERT INTO docs (vec) VALUES (%s)", [(v,) for v in vectors])


@pytest.fixture(scope="module")
def db():
    with fresh_database(DB) as su:
        make_table(su, SIZES)
    for i, (t, n) in enumerate(SIZES.items()):
        load(t, clustered(n, seed=10 + i))
    with superuser() as su:
        su.execute("ANALYZE docs")
        yield su


def exact(conn, q, k):
    conn.execute("SET enable_indexscan = off")
    try:
        return [r[0] for r in conn.execute(QUERY, (q, k))]
    finally:
        conn.execute("RESET enable_indexscan")


def recall(conn, queries, k=10):
    hits = total = 0
    for q in queries:
        got = [r[0] for r in conn.execute(QUERY, (q, k))]
        want = exact(conn, q, k)
        assert len(got) == len(want), "no short results"
        hits += len(set(got) & set(want))
        total += len(want)
    return hits / total


def wait_done(su, tenant, timeout=180):
    deadline = time.monotonic() + timeout
    while True:
        row = su.execute(
            "SELECT phase, error FROM ruvector_tenant_migration_status(%s)", (tenant,)
        ).fetchone()
        if row[0] in ("done", "failed"):
            assert row == ("done", None), f"migration of {tenant}: {row}"
            return
        assert time.monotonic() < deadline, f"migration of {tenant} still {row[0]}"
        time.sleep(0.1)


def dedicated(su, tenant, table="docs"):
    """The indexes of `table` whose predicate names `tenant`."""
    return [
        r[0]
        for r in su.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass "
            "AND pg_get_expr(indpred, indrelid) = format('(tenant_id = %%L::text)', %s::text)",
            (table, tenant),
        )
    ]


def idx_scan(su, index):
    su.execute("SELECT pg_stat_clear_snapshot()")
    return su.execute(
        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = %s", (index,)
    ).fetchone()[0]


def check_ok(su, index):
    rows = su.execute('SELECT "check", ok, detail FROM ruvector_index_check(%s)', (index,)).fetchall()
    assert all(ok for _, ok, _ in rows), rows


def test_a_partial_index_per_tenant_answers_that_tenants_searches(db):
    su = db
    # The specification's "partial index per tenant (for dedicated isolation)".
    su.execute(
        "CREATE INDEX docs_small ON docs USING ruhnsw (vec vector_l2_ops) "
        "WITH (m = 8, ef_construction = 32) WHERE tenant_id = 'small'"
    )
    level = "SELECT isolation_level FROM ruvector.tenants WHERE id = %s"
    assert su.execute(level, ("small",)).fetchone()[0] == "dedicated"
    assert su.execute(level, ("other",)).fetchone()[0] == "shared"
    # The index is an operator's decision: the policy, whose default would move a dedicated
    # tenant of 1,500 rows back to shared, leaves it alone whenever it runs.
    assert su.execute(
        "SELECT reason, pinned, phase, options FROM ruvector.tenant_migrations WHERE tenant_id = 'small'"
    ).fetchall() == [("operator", True, "done", {"ddl": True})]
    su.execute("UPDATE ruvector.isolation_policy SET last_check = NULL")
    assert su.execute("SELECT ruvector._apply_isolation_policy()").fetchone()[0] == 0
    assert su.execute(level, ("small",)).fetchone()[0] == "dedicated"
    queries = clustered(20, seed=99)
    before = idx_scan(su, "docs_small")
    with app("small") as a:
        plan = "\n".join(r[0] for r in a.execute("EXPLAIN " + QUERY, (queries[0], 10)))
        assert "docs_vec" in plan, plan  # unchanged SQL, planned on the shared index
        assert recall(a, queries) >= 0.95
        a.execute("SELECT pg_stat_force_next_flush()")
        # A row inserted now is kept by the partial index alone, and found.
        probe = np.full(DIMS, 40.0, dtype=np.float32)
        new_id = a.execute("INSERT INTO docs (vec) VALUES (%s) RETURNING id", (probe,)).fetchone()[0]
        assert a.execute(QUERY, (probe, 1)).fetchone()[0] == new_id
    deadline = time.monotonic() + 10
    while idx_scan(su, "docs_small") < before + len(queries):
        assert time.monotonic() < deadline, "the partial index counts the searches routed to it"
        time.sleep(0.2)
    with app("other") as o:
        assert recall(o, queries) >= 0.95
        assert all(r[0] == "other" for r in o.execute(
            "SELECT tenant_id FROM docs ORDER BY vec <-> %s LIMIT 20", (probe,)))
    # Dropping it would lose the rows only it holds: refused, with the way out.
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as e:
        su.execute("DROP INDEX docs_small")
    assert "ruvector_tenant_migrate('small', 'shared')" in e.value.diag.message_hint
    # Moving the tenant to shared gives its rows back to the shared index and drops it.
    su.execute("SELECT ruvector_tenant_migrate('small', 'shared')")
    wait_done(su, "small")
    assert dedicated(su, "small") == []
    assert su.execute(level, ("small",)).fetchone()[0] == "shared"
    with app("small") as a:
        assert a.execute(QUERY, (probe, 1)).fetchone()[0] == new_id
        assert recall(a, queries) >= 0.95
        a.execute("DELETE FROM docs WHERE id = %s", (new_id,))
    check_ok(su, "docs_vec")


def test_a_tenant_moves_through_every_level_under_load(db):
    su = db
    rows_before = su.execute("SELECT count(*) FROM docs WHERE tenant_id = 'big'").fetchone()[0]
    stop = threading.Event()
    errors, inserted = [], [0, 0]
    samples = []  # (level, recall@10) measured while the migrations run
    level = ["shared"]

    def inserter(n):
        vs = clustered(100_000, seed=200 + n)
        try:
            with app("big") as a:
                i = 0
                while not stop.is_set():
                    a.execute("INSERT INTO docs (vec) VALUES (%s)", (vs[i],))
                    inserted[n] += 1
                    i += 1
                    time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - every failure counts
            errors.append(f"insert: {e!r}")

    def searcher(n, tenant):
        qs = clustered(1000, seed=300 + n)
        try:
            with app(tenant) as a:
                i = 0
                while not stop.is_set():
                    q = qs[i % len(qs)]
                    got = [r[0] for r in a.execute(QUERY, (q, 10))]
                    if len(got) != 10:
                        errors.append(f"{tenant}: {len(got)} rows")
                    if tenant == "big" and i % 5 == 0:
                        want = exact(a, q, 10)
                        samples.append((level[0], len(set(got) & set(want)) / 10))
                    i += 1
        except Exception as e:  # noqa: BLE001
            errors.append(f"search {tenant}: {e!r}")

    threads = [threading.Thread(target=inserter, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=searcher, args=(n, "big")) for n in range(3)]
    threads.append(threading.Thread(target=searcher, args=(9, "other")))
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        for target in ("partition", "dedicated", "shared"):
            su.execute("SELECT ruvector_tenant_migrate('big', %s)", (target,))
            level[0] = f"to {target}"
            wait_done(su, "big")
            level[0] = target
            got = su.execute("SELECT isolation_level FROM ruvector.tenants WHERE id = 'big'").fetchone()[0]
            assert got == target
            # A separate index relation exactly while dedicated.
            assert len(dedicated(su, "big")) == (1 if target == "dedicated" else 0)
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert sum(inserted) > 50, "the inserts ran throughout"
    rows_after = su.execute("SELECT count(*) FROM docs WHERE tenant_id = 'big'").fetchone()[0]
    assert rows_after == rows_before + sum(inserted)
    for lv in {lv for lv, _ in samples}:
        rs = [r for l2, r in samples if l2 == lv]
        assert np.mean(rs) >= 0.95, f"recall@10 {np.mean(rs):.3f} at {lv} ({len(rs)} samples)"
    assert {"shared", "to dedicated", "dedicated", "to shared"} <= {lv for lv, _ in samples}
    events = su.execute(
        "SELECT to_level FROM ruvector.tenant_migrations WHERE tenant_id = 'big' ORDER BY id"
    ).fetchall()
    assert [e[0] for e in events][-3:] == ["partition", "dedicated", "shared"]
    check_ok(su, "docs_vec")


def test_indexes_made_before_registration_are_keyed_by_tenant(db):
    # The specification's order: the table, its indexes, then ruvector_enable_tenant_rls.
    su = db
    su.execute(
        "CREATE TABLE early (id bigserial, tenant_id text NOT NULL "
        "DEFAULT current_setting('ruvector.tenant_id'), vec vector(16), PRIMARY KEY (tenant_id, id))"
    )
    su.execute("CREATE INDEX early_vec ON early USING ruhnsw (vec vector_l2_ops) WITH (m = 12)")
    su.execute("CREATE INDEX early_other ON early USING ruhnsw (vec vector_l2_ops) WHERE tenant_id = 'other'")
    notices = []
    su.add_notice_handler(lambda d: notices.append(d.message_primary))
    su.execute("SELECT ruvector_enable_tenant_rls('early')")
    assert sum("rebuilt keyed by tenant" in n for n in notices) == 2, notices
    keys = dict(su.execute(
        "SELECT indexrelid::regclass::text, indnkeyatts FROM pg_index WHERE indrelid = 'early'::regclass"
    ).fetchall())
    assert keys == {"early_pkey": 2, "early_vec": 2, "early_other": 2}
    assert "m='12'" in su.execute("SELECT pg_get_indexdef('early_vec'::regclass)").fetchone()[0]
    su.execute("GRANT SELECT, INSERT ON early TO rv_app")
    su.execute("GRANT USAGE ON SEQUENCE early_id_seq TO rv_app")
    for t in ("small", "other"):
        with app(t) as a:
            a.cursor().executemany("INSERT INTO early (vec) VALUES (%s)", [(v,) for v in clustered(300, seed=len(t))])
    su.execute("ANALYZE early")
    # 'other' now has a dedicated index on this table: its level says so.
    assert su.execute("SELECT isolation_level FROM ruvector.tenants WHERE id = 'other'").fetchone()[0] == "dedicated"
    q = clustered(1, seed=3)[0]
    for t in ("small", "other"):
        with app(t) as a:
            plan = "\n".join(r[0] for r in a.execute("EXPLAIN SELECT id FROM early ORDER BY vec <-> %s LIMIT 5", (q,)))
            assert "early_vec" in plan, plan
            got = a.execute("SELECT id, tenant_id FROM early ORDER BY vec <-> %s LIMIT 5", (q,)).fetchall()
            assert {r[1] for r in got} == {t}
    su.execute("SELECT ruvector_tenant_migrate('other', 'shared')")
    wait_done(su, "other")
    assert dedicated(su, "other", "early") == []


def test_a_standby_follows_the_switch(db):
    su = db
    port = 28821
    queries = clustered(20, seed=55)
    with standby(su, "levels-standby", port):
        sdsn = psycopg.conninfo.make_conninfo(admin_dsn(DB), port=port, user="rv_app")
        for target in ("dedicated", "shared"):
            su.execute("SELECT ruvector_tenant_migrate('big', %s)", (target,))
            wait_done(su, "big")
            lsn = su.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            with app("big") as a:
                expected = [[r[0] for r in a.execute(QUERY, (q, 10))] for q in queries]
            with psycopg.connect(sdsn, autocommit=True) as s:
                register_vector(s)
                wait_for_replay(s, lsn)
                s.execute("SET ruvector.tenant_id = 'big'")
                got = [[r[0] for r in s.execute(QUERY, (q, 10))] for q in queries]
                assert got == expected, f"the standby answers as the primary at {target}"


def test_a_migration_cut_off_by_kill_9_is_taken_up_at_restart(db):
    su = db
    su.execute("SELECT ruvector_tenant_isolate('big')")
    deadline = time.monotonic() + 60
    while su.execute("SELECT phase FROM ruvector_tenant_migration_status('big')").fetchone()[0] == "pending":
        assert time.monotonic() < deadline, "the migration started"
        time.sleep(0.01)
    kill_9_server()
    start_server()
    queries = clustered(20, seed=77)
    with app("big") as a:  # the first tenant statement loads the database's tenants
        assert recall(a, queries) >= 0.95
    with superuser() as s:
        wait_done(s, "big")
        assert len(dedicated(s, "big")) == 1
        for index in dedicated(s, "big") + ["docs_vec"]:
            check_ok(s, index)
        valid = s.execute(
            "SELECT bool_and(indisvalid) FROM pg_index WHERE indrelid = 'docs'::regclass"
        ).fetchone()[0]
        assert valid, "no invalid index is left behind"
    with app("big") as a:
        assert recall(a, queries) >= 0.95
    with superuser() as s:
        s.execute("SELECT ruvector_tenant_migrate('big', 'shared')")
        wait_done(s, "big")


@pytest.mark.parametrize("phase", ["copying", "catching_up"])
def test_a_demotion_cut_off_by_kill_9_is_taken_up_at_restart(db, phase):
    """kill -9 while a dedicated tenant moves back to shared: while its dedicated index is
    being marked retiring, or while the shared index is rebuilt concurrently."""
    with superuser() as su:
        su.execute("SELECT ruvector_tenant_isolate('big')")
        wait_done(su, "big")
        su.execute("SELECT ruvector_tenant_migrate('big', 'shared')")
        deadline = time.monotonic() + 60
        seen = "pending"
        while seen in ("pending", "copying") and seen != phase:
            assert time.monotonic() < deadline, f"the demotion reached {phase}"
            seen = su.execute("SELECT phase FROM ruvector.tenant_migrations "
                              "WHERE tenant_id = 'big' ORDER BY id DESC LIMIT 1").fetchone()[0]
            time.sleep(0.005)
    kill_9_server()
    start_server()
    queries = clustered(20, seed=78)
    with app("big") as a:
        assert recall(a, queries) >= 0.95
    with superuser() as s:
        wait_done(s, "big")
        assert dedicated(s, "big") == []
        indexes = s.execute("SELECT indexrelid::regclass::text, indisvalid FROM pg_index "
                            "WHERE indrelid = 'docs'::regclass").fetchall()
        assert all(valid for _, valid in indexes), indexes
        assert sorted(name for name, _ in indexes) == ["docs_pkey", "docs_vec"], indexes
        check_ok(s, "docs_vec")
    with app("big") as a:
        assert recall(a, queries) >= 0.95
        a.execute("SET enable_seqscan = off")
        a.execute("SET enable_bitmapscan = off")
        a.execute("SET enable_sort = off")
        plan = "\n".join(r[0] for r in a.execute("EXPLAIN SELECT id FROM docs ORDER BY vec <-> %s LIMIT 100000",
                                                 (queries[0],)))
        assert "docs_vec" in plan, plan
        assert a.execute("SELECT count(*) FROM docs").fetchone()[0] == a.execute(
            "SELECT count(*) FROM (SELECT id FROM docs ORDER BY vec <-> %s LIMIT 100000) s",
            (queries[0],)).fetchone()[0], "the shared index holds every row of the tenant again"


def test_a_migration_asked_for_right_after_a_restart_runs_before_any_tenant_statement(db):
    """The maintenance launcher serves databases whose tenants are loaded; asking for a
    migration loads them, so it does not wait for the first tenant statement after a start."""
    kill_9_server()
    start_server()
    with superuser() as su:
        su.execute("SELECT ruvector_tenant_isolate('other')")
        wait_done(su, "other", timeout=60)
        assert len(dedicated(su, "other")) == 1
        su.execute("SELECT ruvector_tenant_migrate('other', 'shared')")
        wait_done(su, "other", timeout=60)
        assert dedicated(su, "other") == []


def test_a_migration_counts_against_its_tenants_execution_slots(db):
    """The migration's work takes one of the tenant's execution slots, as its statements do:
    a tenant limited to one statement at a time waits (here: is refused after a short wait)
    while its migration runs, and other tenants are not."""
    with superuser() as su:
        su.execute("UPDATE ruvector.tenants SET max_concurrent = 1 WHERE id = 'big'")
        su.execute(f"ALTER ROLE rv_app IN DATABASE {DB} SET ruvector.admission_timeout = 200")
        try:
            observed = False
            for attempt in range(6):
                target = "dedicated" if attempt % 2 == 0 else "shared"
                with app("big") as a, app("other") as o:
                    su.execute("SELECT ruvector_tenant_migrate('big', %s)", (target,))
                    deadline = time.monotonic() + 60
                    while su.execute("SELECT phase FROM ruvector_tenant_migration_status('big')"
                                     ).fetchone()[0] == "pending":
                        assert time.monotonic() < deadline, "the migration started"
                        time.sleep(0.005)
                    try:
                        a.execute("SELECT count(*) FROM docs").fetchone()
                        refused = False
                    except psycopg.errors.InsufficientResources:
                        refused = True
                    o.execute("SELECT count(*) FROM docs").fetchone()  # not counted against others
                    phase = su.execute("SELECT phase FROM ruvector_tenant_migration_status('big')").fetchone()[0]
                    wait_done(su, "big")
                if refused:
                    observed = True
                    break
                # Admitted: only because the migration had already finished.
                assert phase == "done", f"admitted while the migration was {phase}"
            assert observed, "the migration never held the tenant's slot when its statement came"
            if target == "dedicated":
                su.execute("SELECT ruvector_tenant_migrate('big', 'shared')")
                wait_done(su, "big")
        finally:
            su.execute("UPDATE ruvector.tenants SET max_concurrent = 10 WHERE id = 'big'")
            su.execute(f"ALTER ROLE rv_app IN DATABASE {DB} RESET ruvector.admission_timeout")


def test_the_policy_promotes_exactly_the_tenants_above_its_thresholds(db):
    with superuser() as su:
        # The operators' moves above pinned these tenants; hand them back to the policy.
        for t in SIZES:
            su.execute("SELECT ruvector_tenant_migrate(%s, 'shared', '{\"pin\": false}')", (t,))
            wait_done(su, t)
        su.execute(
            "SELECT ruvector_tenant_set_policy(%s)",
            ('{"auto_promote_to_partition": 1000, "auto_promote_to_dedicated": 3000, '
             '"auto_demote_from_dedicated": 2000, "auto_demote_from_partition": 100, '
             '"check_interval": "1 second"}',),
        )
        want = {"big": "dedicated", "small": "partition", "other": "shared"}
        deadline = time.monotonic() + 90
        while True:
            got = dict(su.execute("SELECT id, isolation_level FROM ruvector.tenants").fetchall())
            running = su.execute(
                "SELECT count(*) FROM ruvector.tenant_migrations WHERE phase NOT IN ('done', 'failed')"
            ).fetchone()[0]
            if got == want and running == 0:
                break
            assert time.monotonic() < deadline, f"levels {got}, {running} migrations running"
            time.sleep(0.5)
        reasons = su.execute(
            "SELECT tenant_id, to_level FROM ruvector.tenant_migrations WHERE reason = 'policy' ORDER BY id"
        ).fetchall()
        assert sorted(reasons) == [("big", "dedicated"), ("small", "partition")]
        assert len(dedicated(su, "big")) == 1 and dedicated(su, "small") == []
        # An operator's move stays: the policy runs again and leaves the pinned tenant alone.
        su.execute("SELECT ruvector_tenant_migrate('small', 'shared')")
        wait_done(su, "small")
        moved = su.execute("SELECT now()").fetchone()[0]
        deadline = time.monotonic() + 60
        while (su.execute("SELECT last_check FROM ruvector.isolation_policy").fetchone()[0] or moved) <= moved:
            assert time.monotonic() < deadline, "the policy ran again"
            time.sleep(0.5)
        assert su.execute("SELECT isolation_level FROM ruvector.tenants WHERE id = 'small'").fetchone()[0] == "shared"
        su.execute("SELECT ruvector_tenant_set_policy('{\"enabled\": false}')")


def test_only_administrators_migrate_tenants(db):
    with app("small") as a:
        for sql in ("SELECT ruvector_tenant_isolate('small')",
                    "SELECT ruvector_tenant_migrate('small', 'dedicated')",
                    "SELECT * FROM ruvector_tenant_migration_status('small')",
                    "SELECT ruvector_tenant_set_policy('{}')"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                a.execute(sql)
    with superuser() as su:
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            su.execute("SELECT ruvector_tenant_migrate('small', 'private')")
        with pytest.raises(psycopg.errors.UndefinedObject):
            su.execute("SELECT ruvector_tenant_migrate('nobody', 'dedicated')")
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            su.execute("SELECT ruvector_tenant_set_policy('{\"auto_promote\": 5}')")


def test_a_tenant_created_at_another_level_gets_there(db):
    """ruvector_tenant_create's isolation_level option starts the migration at once."""
    with superuser() as su:
        su.execute("SELECT ruvector_tenant_create('born_partition', '{\"isolation_level\": \"partition\", \"max_qps\": 0}')")
        deadline = time.monotonic() + 60
        while su.execute("SELECT isolation_level FROM ruvector.tenants WHERE id = 'born_partition'").fetchone()[0] != "partition":
            assert time.monotonic() < deadline, "the tenant did not reach its level"
            time.sleep(0.1)
        su.execute("SELECT ruvector_tenant_delete('born_partition', hard := true)")


SCALE_DB = "ruvector_levels_scale"
SCALE_TENANTS = [f"t{i:03d}" for i in range(100)]


def test_a_hundred_dedicated_tenants_in_one_table(db):
    with fresh_database(SCALE_DB) as su:
        make_table(su, SCALE_TENANTS)
    for i, t in enumerate(SCALE_TENANTS):
        load(t, clustered(30, seed=1000 + i), SCALE_DB)
    with superuser(SCALE_DB) as su:
        su.execute("ANALYZE docs")
        for t in SCALE_TENANTS:
            su.execute("SELECT ruvector_tenant_isolate(%s)", (t,))
        for t in SCALE_TENANTS:
            wait_done(su, t, timeout=600)
        assert su.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'docs'::regclass AND indpred IS NOT NULL"
        ).fetchone()[0] == 100
        q = clustered(1, seed=5)[0]
        for t in SCALE_TENANTS:
            with app(t, SCALE_DB) as a:
                got = a.execute("SELECT id, tenant_id FROM docs ORDER BY vec <-> %s LIMIT 5", (q,)).fetchall()
                assert {r[1] for r in got} == {t}
                assert [r[0] for r in got] == exact(a, q, 5)
        # An administrator's search under '*' merges the 100 dedicated indexes in distance order.
        got = [r[0] for r in su.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 50", (q,))]
        assert got == exact(su, q, 50)
        # Dropping the shared index drops the dedicated indexes made for it.
        su.execute("DROP INDEX docs_vec")
        assert su.execute(
            "SELECT count(*) FROM pg_index WHERE indrelid = 'docs'::regclass"
        ).fetchone()[0] == 1  # the primary key


PACK_DB = "ruvector_levels_pack"


def test_small_shared_tenants_take_no_more_room_than_a_plain_index(db):
    """The issue's case: 2,000 tenants with 3 vectors of 64 dimensions. Shared tenants' nodes
    are packed onto common pages, so the tenant-keyed index is about the size of a plain
    index on the same rows (it was 5.7x with a page per tenant); a tenant moved to partition
    gets pages of its own."""
    with fresh_database(PACK_DB) as su:
        su.execute("SET client_min_messages = warning")
        su.execute("SELECT count(ruvector_tenant_create('t' || i, '{\"max_qps\": 0}')) FROM generate_series(1, 2000) i")
        su.execute("CREATE TABLE docs (id bigserial, tenant_id text NOT NULL, vec vector(64), PRIMARY KEY (tenant_id, id))")
        su.execute("SELECT ruvector_enable_tenant_rls('docs')")
        su.execute("SET ruvector.tenant_id = '*'")
        rows = ("SELECT 't' || (1 + g % 2000), (SELECT array_agg(random())::real[] "
                "FROM generate_series(1, 64) WHERE g > 0)::vector FROM generate_series(1, 6000) g")
        su.execute(f"INSERT INTO docs (tenant_id, vec) {rows}")
        su.execute("CREATE TABLE plain (id bigint PRIMARY KEY, vec vector(64))")
        su.execute("INSERT INTO plain SELECT id, vec FROM docs")
        su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops)")
        su.execute("CREATE INDEX plain_vec ON plain USING ruhnsw (vec vector_l2_ops)")
        size = "SELECT pg_relation_size('docs_vec')::float8 / pg_relation_size('plain_vec')"
        assert su.execute(size).fetchone()[0] <= 1.1
        # Inserts pack too.
        su.execute(f"INSERT INTO docs (tenant_id, vec) {rows}")
        su.execute("INSERT INTO plain SELECT id, vec FROM docs WHERE id > 6000")
        assert su.execute(size).fetchone()[0] <= 1.1
        detail = dict((r[0], r[2]) for r in su.execute('SELECT * FROM ruvector_index_check(\'docs_vec\')'))
        assert detail["directory"] == "2000 tenants, 0 node pages in their chains, 12000 packed nodes", detail
        su.execute("GRANT SELECT ON docs TO rv_app")
        q = "SELECT id, tenant_id FROM docs ORDER BY vec <-> (SELECT array_agg(0.5)::real[] FROM generate_series(1, 64))::vector LIMIT 10"
        with app("t7", PACK_DB) as a:
            assert [r[1] for r in a.execute(q)] == ["t7"] * 6
        su.execute("SELECT ruvector_tenant_migrate('t7', 'partition')")
        wait_done(su, "t7")
        rows_ok = su.execute('SELECT bool_and(ok) FROM ruvector_index_check(\'docs_vec\')').fetchone()[0]
        assert rows_ok
        detail = dict((r[0], r[2]) for r in su.execute('SELECT * FROM ruvector_index_check(\'docs_vec\')'))
        assert detail["directory"] == "2000 tenants, 1 node pages in their chains, 11994 packed nodes", detail
        with app("t7", PACK_DB) as a:
            assert [r[1] for r in a.execute(q)] == ["t7"] * 6


def test_the_specifications_table_ddl_works_for_an_ordinary_owner(db):
    """The specification's CREATE TABLE with `REFERENCES ruvector.tenants(id) ON DELETE
    CASCADE`, made by a table owner who is no superuser; the cascade is the hard delete's:
    the tenant's rows go with its catalog row."""
    fk_db = "ruvector_levels_fk"
    with fresh_database(fk_db) as su:
        su.execute("""DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rv_owner')
                      THEN CREATE ROLE rv_owner LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$""")
        su.execute("GRANT ruvector_user TO rv_owner")
        su.execute("GRANT CREATE ON SCHEMA public TO rv_owner")
        for t in ("fa", "fb", "fc"):
            su.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}')", (t,))
    owner = psycopg.conninfo.make_conninfo(admin_dsn(fk_db), user="rv_owner")
    with psycopg.connect(owner, autocommit=True) as o:
        o.execute("""CREATE TABLE embeddings (
                         id BIGSERIAL PRIMARY KEY,
                         tenant_id TEXT NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                         content TEXT,
                         embedding vector(16),
                         CONSTRAINT fk_tenant FOREIGN KEY (tenant_id)
                             REFERENCES ruvector.tenants(id) ON DELETE CASCADE)""")
        o.execute("SELECT ruvector_enable_tenant_rls('embeddings', 'tenant_id')")
        o.execute("CREATE INDEX ON embeddings USING ruhnsw (embedding vector_cosine_ops)")
        o.execute("GRANT SELECT, INSERT, DELETE ON embeddings TO rv_app")
        o.execute("GRANT USAGE ON SEQUENCE embeddings_id_seq TO rv_app")
    for i, t in enumerate(("fa", "fb", "fc")):
        with app(t, fk_db) as a:
            a.cursor().executemany("INSERT INTO embeddings (content, embedding) VALUES ('x', %s)",
                                   [(v,) for v in clustered(3, seed=i)])
    counts = ("SELECT tenant_id, count(*) FROM embeddings GROUP BY 1 ORDER BY 1")
    with superuser(fk_db) as su:
        assert su.execute(counts).fetchall() == [("fa", 3), ("fb", 3), ("fc", 3)]
        # A hard delete removes the rows (with their erasure records), then the catalog row.
        su.execute("RESET ruvector.tenant_id")
        su.execute("SELECT ruvector_tenant_delete('fa', hard := true)")
        # Deleting the catalog row directly cascades, as the constraint says.
        su.execute("DELETE FROM ruvector.tenants WHERE id = 'fc'")
        su.execute("SET ruvector.tenant_id = '*'")
        assert su.execute(counts).fetchall() == [("fb", 3)]
        # A row for a tenant that does not exist is refused by the key as well.
        with pytest.raises(psycopg.Error):
            su.execute("INSERT INTO embeddings (tenant_id, content) VALUES ('nobody', 'x')")
    with app("fb", fk_db) as a:
        assert a.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 3


def test_only_ruhnsw_indexes_are_dedicated_indexes(db):
    """A partial btree index keyed like the table's primary key and naming a tenant is no
    dedicated index: creating it changes no level, dropping it is not refused."""
    with superuser() as su:  # the module's connection died with the server's kill -9 above
        su.execute("CREATE TABLE keyed (id bigint, tenant_id text NOT NULL, PRIMARY KEY (id, tenant_id))")
        su.execute("SELECT ruvector_enable_tenant_rls('keyed')")
        level = "SELECT isolation_level FROM ruvector.tenants WHERE id = 'other'"
        before = su.execute(level).fetchone()[0]
        su.execute("CREATE UNIQUE INDEX keyed_other ON keyed (id, tenant_id) WHERE tenant_id = 'other'")
        assert su.execute(level).fetchone()[0] == before
        su.execute("DROP INDEX keyed_other")
        su.execute("DROP TABLE keyed")
