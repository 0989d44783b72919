"""Tenant isolation end to end: an application role without SUPERUSER or BYPASSRLS, several
sessions, every access path we know of. Each test states the attack it covers."""

import threading

import psycopg
import pytest

from tenancy_fixtures import DB, admin_dsn, connect, setup_database


@pytest.fixture(scope="module", autouse=True)
def database():
    setup_database()
    yield


def as_tenant(conn, tenant):
    conn.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return conn


@pytest.fixture
def app():
    with connect("rv_app") as c:
        yield c


def tenants_seen(conn, sql, params=()):
    return {r[0] for r in conn.execute(sql, params).fetchall()}


def refused(conn, sql, sqlstate, params=()):
    with pytest.raises(psycopg.Error) as err:
        conn.execute(sql, params)
    assert err.value.sqlstate == sqlstate, f"{sql}: {err.value}"
    return err.value


# --- no context, bad context -------------------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT * FROM embeddings",
    "INSERT INTO embeddings (tenant_id, content) VALUES ('acme', 'x')",
    "UPDATE embeddings SET content = 'x'",
    "DELETE FROM embeddings",
    "SELECT count(*) FROM all_embeddings",
])
def test_no_context_is_an_error_never_rows(app, sql):
    e = refused(app, sql, "28000")
    assert e.diag.message_primary == "no tenant context"
    assert "SET ruvector.tenant_id" in e.diag.message_hint


def test_malformed_and_unknown_tenants_are_refused(app):
    refused(app, "SET ruvector.tenant_id = 'acme corp'", "22023")
    refused(app, "SET ruvector.tenant_id = 'x'''' OR true --'", "22023")
    refused(app, "SET ruvector.tenant_id = 'nobody'", "42704")
    # The refused SETs left no context behind.
    refused(app, "SELECT * FROM embeddings", "28000")


def test_wildcard_needs_ruvector_admin(app):
    e = refused(app, "SET ruvector.tenant_id = '*'", "42501")
    assert "ruvector_admin" in e.diag.message_detail
    with connect("rv_admin") as adm:
        as_tenant(adm, "*")
        # Admin rights come from ruvector_admin, table rights from a grant.
        with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
            su.execute("GRANT SELECT ON embeddings TO ruvector_admin")
        assert tenants_seen(adm, "SELECT DISTINCT tenant_id FROM embeddings") >= {"acme", "beta", "gamma"}
        # Under a tenant id an admin is confined like everyone else.
        as_tenant(adm, "beta")
        assert tenants_seen(adm, "SELECT DISTINCT tenant_id FROM embeddings") == {"beta"}


def test_wildcard_from_connection_options_is_checked_at_use():
    # A context that bypassed SET (startup options) is still checked when used.
    with psycopg.connect(admin_dsn(DB).replace("user=postgres", "user=rv_app") + " options='-c ruvector.tenant_id=*'", autocommit=True) as c:
        refused(c, "SELECT * FROM embeddings", "42501")


# --- reads -------------------------------------------------------------------------------

SCANS = {
    "seqscan": "SET enable_indexscan = off; SET enable_bitmapscan = off; SET enable_seqscan = on",
    "indexscan": "SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_indexscan = on",
    "bitmapscan": "SET enable_seqscan = off; SET enable_indexscan = off; SET enable_bitmapscan = on",
}


@pytest.mark.parametrize("scan", SCANS)
def test_reads_see_only_own_rows_with_every_scan(app, scan):
    for stmt in SCANS[scan].split(";"):
        app.execute(stmt)
    for tenant in ("acme", "beta"):
        as_tenant(app, tenant)
        rows = app.execute("SELECT tenant_id FROM embeddings WHERE content LIKE 'doc-%%' OR id > 0").fetchall()
        assert {r[0] for r in rows} == {tenant}
        assert len(rows) == 50
        # Other tenants' ids named explicitly in the query: refused, not quietly filtered.
        refused(app, "SELECT tenant_id FROM embeddings WHERE tenant_id IN ('acme', 'beta', 'gamma') "
                "OR content LIKE 'doc-%%' OR id > 0", "42501")


def test_joins_subqueries_ctes_views_and_aggregates(app):
    as_tenant(app, "acme")
    queries = [
        "SELECT e.tenant_id FROM embeddings e JOIN labels l USING (content)",
        "SELECT e.tenant_id FROM labels l LEFT JOIN embeddings e USING (content) WHERE e.id IS NOT NULL",
        "SELECT tenant_id FROM embeddings WHERE id IN (SELECT id FROM embeddings WHERE content LIKE 'doc-beta%%' OR true)",
        "WITH all_rows AS (SELECT * FROM embeddings) SELECT tenant_id FROM all_rows",
        "WITH RECURSIVE r AS (SELECT id, tenant_id FROM embeddings UNION SELECT e.id, e.tenant_id FROM embeddings e JOIN r ON e.id = r.id + 1) SELECT tenant_id FROM r",
        "SELECT tenant_id FROM all_embeddings",
        "SELECT a.tenant_id FROM embeddings a, embeddings b WHERE a.id <> b.id",
        "SELECT tenant_id FROM embeddings ORDER BY vec <-> '[25,5,1]' LIMIT 100",
    ]
    for q in queries:
        assert tenants_seen(app, q) == {"acme"}, q
    assert app.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 50
    # A SECURITY DEFINER function of the table owner: FORCE RLS confines the owner too.
    assert app.execute("SELECT count_all()").fetchone()[0] == 50


def test_copy_to_exports_only_own_rows(app):
    as_tenant(app, "beta")
    with app.cursor() as cur:
        with cur.copy("COPY embeddings (tenant_id, content) TO STDOUT") as copy:
            rows = [bytes(r).decode() for r in copy]
    text = "".join(rows)
    assert text.count("\n") == 50
    assert "acme" not in text and "gamma" not in text


def test_parallel_query_workers_are_confined(app):
    for s in ["SET max_parallel_workers_per_gather = 2", "SET parallel_setup_cost = 0",
              "SET parallel_tuple_cost = 0", "SET min_parallel_table_scan_size = 0",
              "SET force_parallel_mode = on", "SET enable_indexscan = off", "SET enable_bitmapscan = off"]:
        app.execute(s)
    as_tenant(app, "gamma")
    plan = "\n".join(r[0] for r in app.execute("EXPLAIN SELECT tenant_id FROM embeddings").fetchall())
    assert "Gather" in plan
    assert tenants_seen(app, "SELECT tenant_id FROM embeddings") == {"gamma"}
    assert app.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 50


def test_prepared_statements_and_cached_plans_follow_the_context(app):
    app.execute("PREPARE q AS SELECT tenant_id, count(*) FROM embeddings GROUP BY 1")
    # Run it enough times for a generic plan to be cached, across tenant switches.
    for i in range(12):
        tenant = ["acme", "beta", "gamma"][i % 3]
        as_tenant(app, tenant)
        assert app.execute("EXECUTE q").fetchall() == [(tenant, 50)]
    # Client-side prepared statements (psycopg prepares after 5 executions).
    for i in range(12):
        tenant = ["acme", "beta"][i % 2]
        as_tenant(app, tenant)
        rows = app.execute("SELECT tenant_id FROM embeddings WHERE id > %s", (0,), prepare=True).fetchall()
        assert {r[0] for r in rows} == {tenant}
    app.execute("RESET ruvector.tenant_id")
    refused(app, "EXECUTE q", "28000")


def test_set_local_is_undone_by_rollback(app):
    as_tenant(app, "acme")
    with app.transaction(force_rollback=True):
        app.execute("SET LOCAL ruvector.tenant_id = 'beta'")
        assert tenants_seen(app, "SELECT tenant_id FROM embeddings") == {"beta"}
    assert app.execute("SHOW ruvector.tenant_id").fetchone()[0] == "acme"
    assert tenants_seen(app, "SELECT tenant_id FROM embeddings") == {"acme"}
    app.execute("RESET ruvector.tenant_id")
    with app.transaction(force_rollback=True):
        app.execute("SET LOCAL ruvector.tenant_id = 'gamma'")
    refused(app, "SELECT * FROM embeddings", "28000")


def test_cursors_never_return_rows_of_a_tenant_not_in_context(app):
    as_tenant(app, "acme")
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as err:
        with app.transaction():
            app.execute("DECLARE c CURSOR FOR SELECT tenant_id FROM embeddings ORDER BY id")
            first = app.execute("FETCH 10 FROM c").fetchall()
            assert {r[0] for r in first} == {"acme"}
            # A cursor was validated for the tenant it was opened under: once the setting
            # names another, fetching from it is refused (no rows of either).
            app.execute("SET LOCAL ruvector.tenant_id = 'beta'")
            app.execute("FETCH ALL FROM c").fetchall()
    assert err.value.diag.message_primary == "the tenant context changed during the statement"


def test_table_owner_is_confined_too():
    with connect("rv_owner") as owner:
        refused(owner, "SELECT * FROM embeddings", "28000")
        as_tenant(owner, "beta")
        assert tenants_seen(owner, "SELECT tenant_id FROM embeddings") == {"beta"}


# --- writes ------------------------------------------------------------------------------

def test_insert_with_another_tenants_id_is_refused(app):
    as_tenant(app, "acme")
    e = refused(app, "INSERT INTO embeddings (tenant_id, content) VALUES ('beta', 'intruder')", "42501")
    assert "row-level security" in str(e)


def test_insert_on_conflict_cannot_touch_another_tenants_row(app):
    as_tenant(app, "beta")
    beta_id = app.execute("SELECT min(id) FROM embeddings").fetchone()[0]
    as_tenant(app, "acme")
    refused(
        app,
        "INSERT INTO embeddings (id, content) VALUES (%s, 'taken') "
        "ON CONFLICT (id) DO UPDATE SET content = 'stolen'",
        "42501",
        (beta_id,),
    )
    as_tenant(app, "beta")
    assert app.execute("SELECT content FROM embeddings WHERE id = %s", (beta_id,)).fetchone()[0] != "stolen"


def test_update_and_delete_returning_touch_only_own_rows(app):
    as_tenant(app, "gamma")
    rows = app.execute("UPDATE embeddings SET content = content RETURNING tenant_id").fetchall()
    assert {r[0] for r in rows} == {"gamma"} and len(rows) == 50
    # Moving a row to another tenant is refused by WITH CHECK.
    refused(app, "UPDATE embeddings SET tenant_id = 'acme' WHERE id = (SELECT min(id) FROM embeddings)", "42501")
    with app.transaction(force_rollback=True):
        rows = app.execute("DELETE FROM embeddings WHERE true RETURNING tenant_id").fetchall()
        assert {r[0] for r in rows} == {"gamma"} and len(rows) == 50
    as_tenant(app, "acme")
    assert app.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 50


def test_truncate_is_refused_to_tenants(app):
    as_tenant(app, "acme")
    e = refused(app, "TRUNCATE embeddings", "42501")
    assert "TRUNCATE" in e.diag.message_primary


def test_bound_role_cannot_act_as_another_tenant():
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute("SELECT ruvector_tenant_bind_role('rv_app_acme', 'acme')")
    with connect("rv_app_acme") as c:
        as_tenant(c, "acme")
        assert tenants_seen(c, "SELECT tenant_id FROM embeddings") == {"acme"}
        e = refused(c, "SET ruvector.tenant_id = 'beta'", "42501")
        assert "bound" in e.diag.message_primary


def test_tenants_cannot_read_or_change_the_catalog(app):
    as_tenant(app, "acme")
    for sql in [
        "SELECT * FROM ruvector.tenants",
        "UPDATE ruvector.tenants SET suspended_at = NULL",
        "DELETE FROM ruvector.tenant_audit_log",
        "INSERT INTO ruvector.tenant_tables VALUES ('labels', 'content')",
        "SELECT ruvector._registry_sync('beta', 'active', 1, 1, 1, 1, 1, false, false)",
        "SELECT ruvector_tenant_suspend('beta')",
        "SELECT ruvector_tenant_stats('beta')",
    ]:
        refused(app, sql, "42501")
    # Live statistics: a tenant gets its own row only.
    assert tenants_seen(app, "SELECT tenant_id FROM ruvector._live_stats()") == {"acme"}
    assert tenants_seen(app, "SELECT tenant_id FROM ruvector.my_tenant_stats") == {"acme"}
    # The tenant reads its own statistics.
    rows = app.execute("SELECT tenant_id, current_vectors FROM ruvector_tenant_stats('acme')").fetchall()
    assert rows == [("acme", 50)]


# --- lifecycle ---------------------------------------------------------------------------

def test_suspended_tenant_can_do_nothing_until_resumed(app):
    as_tenant(app, "beta")
    app.execute("SELECT count(*) FROM embeddings")
    with connect("rv_admin") as adm:
        adm.execute("SELECT ruvector_tenant_suspend('beta')")
    # The open session is refused at its very next statement, reads included.
    for sql in ["SELECT count(*) FROM embeddings", "INSERT INTO embeddings (content) VALUES ('x')",
                "UPDATE embeddings SET content = 'x'", "DELETE FROM embeddings"]:
        refused(app, sql, "55000")
    with connect("rv_admin") as adm:
        adm.execute("SELECT ruvector_tenant_resume('beta')")
    assert app.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 50


def test_non_admins_cannot_run_lifecycle_calls(app):
    refused(app, "SELECT ruvector_tenant_create('mine')", "42501")
    refused(app, "SELECT ruvector_tenant_delete('acme', hard := true)", "42501")


def test_soft_and_hard_delete():
    with connect("rv_admin") as adm:
        adm.execute("SELECT ruvector_tenant_create('temp-soft')")
        adm.execute("SELECT ruvector_tenant_create('temp-hard')")
    for t in ("temp-soft", "temp-hard"):
        with connect("rv_app") as c:
            as_tenant(c, t)
            c.execute("INSERT INTO embeddings (content) SELECT 'x' FROM generate_series(1, 7)")
    with connect("rv_app") as c:
        as_tenant(c, "temp-soft")
        with connect("rv_admin") as adm:
            assert adm.execute("SELECT * FROM ruvector_tenant_delete('temp-soft')").fetchall() == []
        refused(c, "SELECT * FROM embeddings", "42704")
    with connect("rv_admin") as adm:
        rows = adm.execute("SELECT table_name::text, rows_deleted FROM ruvector_tenant_delete('temp-hard', hard := true)").fetchall()
        assert rows == [("embeddings", 7)]
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        refused(su, "SELECT count(*) FROM embeddings", "28000")  # superusers need a context too
        as_tenant(su, "*")
        assert su.execute("SELECT count(*) FROM embeddings WHERE tenant_id = 'temp-hard'").fetchone()[0] == 0
        assert su.execute("SELECT count(*) FROM ruvector.tenants WHERE id = 'temp-hard'").fetchone()[0] == 0
        # Soft-deleted rows stay until the purge.
        assert su.execute("SELECT count(*) FROM embeddings WHERE tenant_id = 'temp-soft'").fetchone()[0] == 7


# --- quotas ------------------------------------------------------------------------------

def test_quota_is_exact_under_8_concurrent_sessions():
    with connect("rv_admin") as adm:
        adm.execute("SELECT ruvector_tenant_create('quota-t', '{\"max_vectors\": 100, \"max_qps\": 0}')")
    errors, lock = [], threading.Lock()

    def worker(n):
        with connect("rv_app") as c:
            as_tenant(c, "quota-t")
            for i in range(40):
                try:
                    if i % 5 == 0:
                        # An aborted insert must give its reservation back.
                        with c.transaction(force_rollback=True):
                            c.execute("INSERT INTO embeddings (content) VALUES ('rolled back')")
                    else:
                        c.execute("INSERT INTO embeddings (content) VALUES (%s)", (f"w{n}-{i}",))
                except psycopg.Error as e:
                    with lock:
                        errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        as_tenant(su, "*")
        assert su.execute("SELECT count(*) FROM embeddings WHERE tenant_id = 'quota-t'").fetchone()[0] == 100
    assert errors, "8 x 32 inserts against a quota of 100 must be refused some of the time"
    assert {e.sqlstate for e in errors} == {"53400"}
    assert "maximum: 100" in errors[0].diag.message_detail
    with connect("rv_app") as c:
        as_tenant(c, "quota-t")
        assert c.execute("SELECT current_vectors, reserved_vectors FROM ruvector_tenant_stats('quota-t')").fetchone() == (100, 0)
        # Deleting frees quota for new rows.
        c.execute("DELETE FROM embeddings WHERE id IN (SELECT id FROM embeddings LIMIT 3)")
        c.execute("INSERT INTO embeddings (content) SELECT 'again' FROM generate_series(1, 3)")
        refused(c, "INSERT INTO embeddings (content) VALUES ('one too many')", "53400")


def test_collections_are_per_tenant_within_max_collections(app):
    with connect("rv_admin") as adm:
        adm.execute("SELECT ruvector_tenant_create('coll-t', '{\"max_collections\": 2}')")
        adm.execute("INSERT INTO ruvector.collections (name) VALUES ('shared-catalog')")
    as_tenant(app, "coll-t")
    app.execute("SELECT ruvector_collection_create('products', '{\"dimensions\": 3, \"metric\": \"cosine\"}')")
    refused(app, "SELECT ruvector_collection_create('products')", "23505")
    app.execute("SELECT ruvector_collection_create('faq')")
    e = refused(app, "SELECT ruvector_collection_create('third')", "53400")
    assert e.diag.message_detail == "current: 2, maximum: 2"
    assert sorted(r[0] for r in app.execute("SELECT name FROM ruvector.my_collections").fetchall()) == [
        "faq", "products", "shared-catalog"]
    as_tenant(app, "acme")
    app.execute("SELECT ruvector_collection_create('faq')")  # same name, another tenant
    assert sorted(r[0] for r in app.execute("SELECT name FROM ruvector.my_collections").fetchall()) == [
        "faq", "shared-catalog"]
    app.execute("SELECT ruvector_collection_drop('faq')")
    refused(app, "SELECT ruvector_collection_drop('products')", "42704")  # coll-t's, not ours
    app.execute("RESET ruvector.tenant_id")
    refused(app, "SELECT ruvector_collection_create('x')", "28000")


def test_audit_records_the_client_address_over_tcp():
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute(f"ALTER ROLE rv_app IN DATABASE {DB} SET ruvector.audit_enabled = on")
    try:
        tcp = psycopg.conninfo.make_conninfo(admin_dsn(DB), user="rv_app", host="127.0.0.1")
        with psycopg.connect(tcp, autocommit=True) as c:
            as_tenant(c, "gamma")
            c.execute("SELECT count(*) FROM embeddings WHERE content = 'tcp-audit-probe'")
        with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
            row = su.execute("SELECT host(ip_address), user_id FROM ruvector.tenant_audit_log "
                             "WHERE tenant_id = 'gamma' AND operation = 'search' ORDER BY id DESC LIMIT 1").fetchone()
        assert row == ("127.0.0.1", "rv_app")
    finally:
        with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
            su.execute(f"ALTER ROLE rv_app IN DATABASE {DB} RESET ruvector.audit_enabled")
