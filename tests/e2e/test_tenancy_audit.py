"""Audit trail and background maintenance, end to end."""

import time

import psycopg
import pytest

from tenancy_fixtures import DB, admin_dsn, connect, setup_database


@pytest.fixture(scope="module", autouse=True)
def database():
    setup_database()
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        # Database-wide, as a DBA would: sessions and the maintenance worker all audit.
        su.execute(f"ALTER DATABASE {DB} SET ruvector.audit_enabled = on")
    yield
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute(f"ALTER DATABASE {DB} RESET ruvector.audit_enabled")


def su():
    c = psycopg.connect(admin_dsn(DB), autocommit=True)
    c.execute("SET ruvector.tenant_id = '*'")
    return c


def audit_rows(where, params=()):
    with su() as c:
        return c.execute(
            f"SELECT tenant_id, operation, user_id, details FROM ruvector.tenant_audit_log WHERE {where} ORDER BY id",
            params,
        ).fetchall()


def wait_for(where, params=(), timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = audit_rows(where, params)
        if rows:
            return rows
        time.sleep(0.25)
    return []


def test_tenants_cannot_turn_audit_off_or_read_the_log():
    with connect("rv_app") as c:
        with pytest.raises(psycopg.Error) as e:
            c.execute("SET ruvector.audit_enabled = off")
        assert e.value.sqlstate == "42501"
        c.execute("SET ruvector.tenant_id = 'acme'")
        for sql in ["SELECT * FROM ruvector.tenant_audit_log", "DELETE FROM ruvector.tenant_audit_log"]:
            with pytest.raises(psycopg.Error) as e:
                c.execute(sql)
            assert e.value.sqlstate == "42501"
    with connect("rv_admin") as a:
        a.execute("SET ruvector.audit_enabled = off")  # ruvector_admin may


def test_operations_are_recorded_with_row_counts():
    with connect("rv_app") as c:
        c.execute("SET ruvector.tenant_id = 'beta'")
        c.execute("SELECT * FROM embeddings WHERE id > 0").fetchall()
        c.execute("INSERT INTO embeddings (content) VALUES ('audited-1'), ('audited-2')")
        c.execute("UPDATE embeddings SET content = 'audited-3' WHERE content = 'audited-1'")
        c.execute("DELETE FROM embeddings WHERE content LIKE 'audited-%%'")
    rows = audit_rows("tenant_id = 'beta' AND user_id = 'rv_app'")
    ops = [(r[1], r[3]["rows"]) for r in rows]
    assert ("search", 50) in ops
    assert ("insert", 2) in ops
    assert ("update", 1) in ops
    assert ("delete", 2) in ops


def test_searches_in_read_only_transactions_are_recorded():
    """A read-only transaction (default_transaction_read_only, or one begun on a standby just
    before its promotion) cannot insert the audit row: it is written from the queue."""
    with connect("rv_app") as c:
        c.execute("SET default_transaction_read_only = on")
        c.execute("SET ruvector.tenant_id = 'gamma'")
        c.execute("SET ruvector.app_user = 'read-only-reader'")
        assert len(c.execute("SELECT * FROM embeddings WHERE id > 0").fetchall()) == 50
    with su() as s:
        s.execute("SELECT ruvector_audit_flush()")
    rows = wait_for("tenant_id = 'gamma' AND user_id = 'read-only-reader' AND operation = 'search'")
    assert rows and rows[0][3]["rows"] == 50, rows


def test_refused_attempts_are_recorded_although_they_abort():
    with connect("rv_app") as c:
        c.execute("SET ruvector.tenant_id = 'acme'")
        with pytest.raises(psycopg.Error):
            c.execute("TRUNCATE embeddings")
        c.execute("RESET ruvector.tenant_id")
        with pytest.raises(psycopg.Error):
            c.execute("SELECT * FROM embeddings")
    # The maintenance worker writes queued refusals without being asked.
    rows = wait_for("operation = 'refused:truncate' AND tenant_id = 'acme'")
    assert rows and rows[0][3]["reason"] == "truncate_denied" and rows[0][3]["sqlstate"] == "42501"
    rows = wait_for("operation = 'refused:search' AND tenant_id = '' AND user_id = 'rv_app'")
    assert rows and rows[0][3]["reason"] == "no_context"


def test_quota_and_other_tenants_rows_are_refused_on_the_record():
    with connect("rv_admin") as a:
        a.execute("SELECT ruvector_tenant_create('tight', '{\"max_vectors\": 1, \"max_qps\": 0}')")
    with connect("rv_app") as c:
        c.execute("SET ruvector.tenant_id = 'tight'")
        c.execute("SET ruvector.app_user = 'alice@tight.example'")
        c.execute("INSERT INTO embeddings (content) VALUES ('first')")
        with pytest.raises(psycopg.errors.ConfigurationLimitExceeded):
            c.execute("INSERT INTO embeddings (content) VALUES ('over quota')")
        # Another tenant's row: row-level security refuses it (PostgreSQL raises that error).
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO embeddings (tenant_id, content) VALUES ('acme', 'planted')")
    rows = wait_for("tenant_id = 'tight' AND operation = 'refused:insert'")
    assert rows and rows[0][3]["reason"] == "quota_exceeded" and rows[0][3]["sqlstate"] == "53400"
    assert rows[0][2] == "alice@tight.example", "the application's user, when it names one"
    rows = wait_for("tenant_id = 'tight' AND operation = 'refused:write'")
    assert rows and rows[0][3]["reason"] == "other_tenants_row" and rows[0][3]["sqlstate"] == "42501"
    assert rows[0][2] == "alice@tight.example"
    # Operations that succeed name the application's user too.
    assert audit_rows("tenant_id = 'tight' AND operation = 'insert' AND user_id = 'alice@tight.example'")


def test_a_statement_naming_another_tenant_is_refused_on_the_record():
    with connect("rv_app") as c:
        c.execute("SET ruvector.tenant_id = 'acme'")
        c.execute("SET ruvector.app_user = 'mallory@acme.example'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as e:
            c.execute("SELECT content FROM embeddings WHERE tenant_id = 'globex'").fetchall()
        assert 'names tenant "globex"' in e.value.diag.message_primary
        # The tenant's own id, or none, is fine.
        c.execute("SELECT content FROM embeddings WHERE tenant_id = 'acme'").fetchall()
    rows = wait_for("tenant_id = 'acme' AND operation = 'refused:search' AND details->>'reason' = 'cross_tenant'")
    assert rows and rows[0][3]["sqlstate"] == "42501" and rows[0][2] == "mallory@acme.example"


def test_wildcard_use_and_lifecycle_calls_are_recorded():
    with connect("rv_admin") as a:
        a.execute("SELECT ruvector_tenant_create('audited-tenant')")
        a.execute("SELECT ruvector_tenant_suspend('audited-tenant')")
        a.execute("SELECT ruvector_tenant_resume('audited-tenant')")
        a.execute("SELECT ruvector_tenant_delete('audited-tenant', hard := true)")
    ops = [r[1] for r in audit_rows("tenant_id = 'audited-tenant'")]
    assert ops[:4] == ["create", "suspend", "resume", "delete"] or ops == ["create", "suspend", "resume", "delete"]
    with psycopg.connect(admin_dsn(DB), autocommit=True) as s:
        s.execute("GRANT SELECT ON embeddings TO ruvector_admin")
    with connect("rv_admin") as a:
        a.execute("SET ruvector.tenant_id = '*'")
        a.execute("SELECT count(*) FROM embeddings")
    assert audit_rows("tenant_id = '*' AND operation = 'search' AND user_id = 'rv_admin'")


def test_soft_deleted_tenant_is_purged_by_the_worker():
    with psycopg.connect(admin_dsn(DB), autocommit=True) as s:
        s.execute("ALTER SYSTEM SET ruvector.tenant_purge_delay = 0")
        s.execute("SELECT pg_reload_conf()")
    try:
        with connect("rv_admin") as a:
            a.execute("SELECT ruvector_tenant_create('soon-gone')")
        with connect("rv_app") as c:
            c.execute("SET ruvector.tenant_id = 'soon-gone'")
            c.execute("INSERT INTO embeddings (content) SELECT 'x' FROM generate_series(1, 5)")
        time.sleep(0.5)  # the reloaded setting reaches new sessions
        with connect("rv_admin") as a:
            a.execute("SELECT ruvector_tenant_delete('soon-gone')")
        deadline = time.monotonic() + 30
        left = None
        while time.monotonic() < deadline:
            with su() as c:
                left = c.execute(
                    "SELECT (SELECT count(*) FROM embeddings WHERE tenant_id = 'soon-gone'), "
                    "(SELECT count(*) FROM ruvector.tenants WHERE id = 'soon-gone')"
                ).fetchone()
            if left == (0, 0):
                break
            time.sleep(0.5)
        assert left == (0, 0), f"not purged: {left}"
        assert audit_rows("tenant_id = 'soon-gone' AND operation = 'purge'")
    finally:
        with psycopg.connect(admin_dsn(DB), autocommit=True) as s:
            s.execute("ALTER SYSTEM RESET ruvector.tenant_purge_delay")
            s.execute("SELECT pg_reload_conf()")


def test_hard_delete_is_vacuumed_and_reported_erased():
    with connect("rv_admin") as a:
        a.execute("SELECT ruvector_tenant_create('erase-me')")
    with connect("rv_app") as c:
        c.execute("SET ruvector.tenant_id = 'erase-me'")
        c.execute("INSERT INTO embeddings (content) SELECT 'secret-' || i FROM generate_series(1, 40) i")
    with connect("rv_admin") as a:
        a.execute("SELECT ruvector_tenant_delete('erase-me', hard := true)")
        status = a.execute("SELECT table_name::text, rows_deleted, erased FROM ruvector_tenant_erasure_status('erase-me')").fetchall()
        assert status == [("embeddings", 40, False)]
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        with connect("rv_admin") as a:
            status = a.execute("SELECT erased, vacuumed_at IS NOT NULL FROM ruvector_tenant_erasure_status('erase-me')").fetchall()
        if status == [(True, True)]:
            break
        time.sleep(0.5)
    assert status == [(True, True)]
    # The dead tuples are gone from the heap: no line pointer holds them any more.
    with su() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        pages = c.execute("SELECT pg_relation_size('embeddings') / current_setting('block_size')::int").fetchone()[0]
        leftovers = c.execute(
            "SELECT count(*) FROM generate_series(0, %s - 1) b, "
            "LATERAL heap_page_items(get_raw_page('embeddings', b::int)) h "
            "WHERE h.t_data IS NOT NULL AND position('secret-'::bytea IN h.t_data) > 0",
            (pages,),
        ).fetchone()[0]
        assert leftovers == 0
