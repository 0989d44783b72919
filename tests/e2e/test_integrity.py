"""Per-tenant integrity, end to end: a tenant whose index graph really fragments (most of its
rows deleted, not yet vacuumed) goes to stress and then critical, its risky statements are
throttled or deferred by the gate, a tenant sharing the table and the index is untouched, and
VACUUM's repair brings the tenant back. Policies come from ruvector.integrity_policies, the
specification's INSERT included; overrides expire by themselves.

Samples are taken with ruvector_tenant_integrity_sample() (the maintenance worker takes the
same samples on its own schedule); the policy's hysteresis is shortened so the test does not
wait minutes.
"""

import statistics
import time

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_integrity"
ROWS = 6000
FAST = (
    '{"degrade_samples": 1, "critical_samples": 1, "restore_threshold_offset": 0.1, '
    '"restore_hold_seconds": 1, "cooldown_after_transition_seconds": 0}'
)


def app(tenant):
    c = psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(DB), user="rv_app"), autocommit=True)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def vectors(n):
    return (
        "SELECT (SELECT array_agg(random())::real[] FROM generate_series(1, 8) WHERE g > 0)::vector "
        f"FROM generate_series(1, {n}) g"
    )


@pytest.fixture(scope="module")
def db():
    with fresh_database(DB) as c:
        for t in ("ia", "ib"):
            c.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}')", (t,))
        c.execute(
            "CREATE TABLE docs (id bigserial, tenant_id text NOT NULL "
            "DEFAULT current_setting('ruvector.tenant_id'), vec vector(8), PRIMARY KEY (tenant_id, id)) "
            "WITH (autovacuum_enabled = false)"
        )
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("CREATE INDEX ON docs USING ruhnsw (vec vector_l2_ops)")
        c.execute("GRANT SELECT, INSERT, DELETE ON docs TO rv_app")
        c.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO rv_app")
    for t in ("ia", "ib"):
        with app(t) as a:
            a.execute(f"INSERT INTO docs (vec) {vectors(ROWS)}")
    su = psycopg.connect(admin_dsn(DB), autocommit=True)
    yield su
    su.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def sample(su, tenant):
    return su.execute("SELECT state, lambda_cut FROM ruvector_tenant_integrity_sample(%s)", (tenant,)).fetchone()


def search_times(conn, n):
    times, refused = [], 0
    for i in range(n):
        started = time.perf_counter()
        try:
            conn.execute("SELECT id FROM docs ORDER BY vec <-> %s::vector LIMIT 10", (f"[{i % 10 / 10},0,0,0,0,0,0,0]",)).fetchall()
        except psycopg.errors.InsufficientResources:
            refused += 1
            continue
        times.append(time.perf_counter() - started)
    return times, refused


def test_fragmentation_degrades_one_tenant_and_vacuum_restores_it(db):
    su = db
    # The specification's statement, verbatim but for the tenant: ia's thresholds change.
    su.execute(
        "INSERT INTO ruvector.integrity_policies (tenant_id, name, threshold_high, threshold_low) "
        "VALUES ('ia', 'enterprise', 0.6, 0.3)"
    )
    su.execute("UPDATE ruvector.integrity_policies SET hysteresis = %s::jsonb WHERE tenant_id = 'ia'", (FAST,))
    state, healthy = sample(su, "ia")
    assert state == "normal" and healthy >= 0.8, (state, healthy)
    assert sample(su, "ib")[0] == "normal"

    ib = app("ib")
    before, refused = search_times(ib, 200)
    assert refused == 0

    # 80% of ia's rows deleted; no VACUUM yet, so its graph links mostly to dead rows.
    with app("ia") as a:
        a.execute("DELETE FROM docs WHERE id % 5 <> 0")
    state, degraded = sample(su, "ia")
    assert degraded < 0.3, degraded
    assert state == "stress"
    assert sample(su, "ia")[0] == "critical"
    # ib, same table and index, standard policy: untouched.
    state, lambda_b = sample(su, "ib")
    assert state == "normal" and lambda_b >= 0.8

    with app("ia") as a:
        with pytest.raises(psycopg.errors.InsufficientResources) as e:
            a.execute(f"INSERT INTO docs (vec) {vectors(50)}")
        detail = e.value.diag.message_detail
        assert "deferred" in str(e.value) and "critical" in detail and 'policy "enterprise"' in detail
        assert detail.startswith("retry after 60000 ms")
        _, refused_a = search_times(a, 50)
        assert refused_a == 10, "critical: 80% of searches admitted"
    during, refused_b = search_times(ib, 200)
    assert refused_b == 0
    ib.execute(f"INSERT INTO docs (vec) {vectors(50)}")
    ratio = statistics.median(during) / statistics.median(before)
    assert ratio < 3, f"ib's median search latency changed {ratio:.2f}x"
    ib.close()

    stats = dict(su.execute("SELECT tenant_id, integrity_state FROM ruvector.tenant_stats").fetchall())
    assert stats == {"ia": "critical", "ib": "normal"}
    rows = su.execute("SELECT count(*) FROM ruvector.tenant_contracted_graph WHERE tenant_id = 'ia'").fetchone()[0]
    assert 10 <= rows <= 256

    # VACUUM removes the dead nodes and repairs the links: back to stress, then normal, each
    # after the policy's hold time.
    su.execute("VACUUM docs")
    state, repaired = sample(su, "ia")
    assert repaired > 0.7, repaired
    time.sleep(1.2)
    assert sample(su, "ia")[0] == "stress"
    sample(su, "ia")
    time.sleep(1.2)
    assert sample(su, "ia")[0] == "normal"
    events = su.execute(
        "SELECT from_state, to_state FROM ruvector.integrity_events WHERE tenant_id = 'ia' ORDER BY id"
    ).fetchall()
    assert events == [("normal", "stress"), ("stress", "critical"), ("critical", "stress"), ("stress", "normal")]
    assert su.execute("SELECT count(*) FROM ruvector.integrity_events WHERE tenant_id = 'ib'").fetchone()[0] == 0


def test_an_override_ends_by_itself(db):
    su = db
    su.execute("SELECT ruvector_tenant_integrity_override('ib', 'critical', '2 seconds')")
    with app("ib") as b:
        with pytest.raises(psycopg.errors.InsufficientResources):
            b.execute(f"INSERT INTO docs (vec) {vectors(20)}")
        time.sleep(2.2)
        b.execute(f"INSERT INTO docs (vec) {vectors(20)}")
    last = su.execute(
        "SELECT to_state, reason FROM ruvector.integrity_events WHERE tenant_id = 'ib' ORDER BY id DESC LIMIT 1"
    ).fetchone()
    assert last[0] == "critical" and last[1].startswith("override by")


def test_only_administrators_sample_and_override(db):
    with app("ia") as a:
        for sql in (
            "SELECT * FROM ruvector_tenant_integrity_sample('ib')",
            "SELECT ruvector_tenant_integrity_override('ib', 'normal', '1 hour')",
            "SELECT ruvector._integrity_sample('ib')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                a.execute(sql)
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        db.execute("SELECT ruvector_tenant_integrity_override('ib', 'panic', '1 hour')")


def test_two_samples_of_one_tenant_at_once_both_succeed(db):
    """A sample asked for while another one of the same tenant is writing its contracted graph
    (as the maintenance worker's may be) waits for it, then replaces its rows: no 23505."""
    import threading

    first = psycopg.connect(admin_dsn(DB))
    first.execute("SELECT ruvector_tenant_integrity_sample('ib')").fetchone()  # open, not committed
    errors = []

    def second():
        try:
            with psycopg.connect(admin_dsn(DB), autocommit=True) as c:
                sample(c, "ib")
        except psycopg.Error as e:
            errors.append(e)

    t = threading.Thread(target=second)
    t.start()
    t.join(timeout=1)
    assert t.is_alive(), "the second sample waits for the first one's transaction"
    first.commit()
    first.close()
    t.join(timeout=60)
    assert not t.is_alive() and not errors, errors
    regions = db.execute("SELECT count(*), count(DISTINCT node_id) FROM ruvector.tenant_contracted_graph "
                         "WHERE tenant_id = 'ib'").fetchone()
    assert regions[0] == regions[1] > 0
