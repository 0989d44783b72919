"""Adversarial tests of tenant isolation, by class of attack, as application roles in sessions
of their own (neither SUPERUSER nor BYPASSRLS unless a test says otherwise):

- the setting changing while a statement runs (RESET to an unchecked default, a function's
  SET clause restoring the old value under an open cursor), and defaults planted with
  ALTER ROLE / ALTER DATABASE;
- internal functions and trigger functions open to PUBLIC;
- privileged maintenance that runs a table owner's code (hard delete, purge);
- object kinds row-level security does not cover (partitions, inheritance, views,
  materialized views, foreign tables, temporary tables);
- utility commands that bypass the executor (COPY, LOCK, EXPLAIN), and roles that bypass RLS;
- resource paths: idle cursors holding execution slots, nested statements and repeated
  searches against the rate limit, ON CONFLICT against the quota, collection metadata,
  MERGE in statistics and audit, dropped databases in the registry.

Every test asserts what a user depends on: no row of another tenant, the SQLSTATE of the
refusal, and the state afterwards."""

import time

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, dsn, fresh_database

DB = "ruvector_attacks"
ROLES = ["rv_app", "rv_bound", "rv_owner", "rv_owner2", "rv_admin"]


def su(db=DB, tenant=None):
    c = psycopg.connect(admin_dsn(db), autocommit=True)
    if tenant:
        c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def connect(role, tenant=None, options=None):
    conninfo = dsn(role, DB)
    if options:
        conninfo = psycopg.conninfo.make_conninfo(conninfo, options=options)
    c = psycopg.connect(conninfo, autocommit=True)
    if tenant:
        c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def refused(conn, sql, sqlstate, params=()):
    with pytest.raises(psycopg.Error) as err:
        cur = conn.execute(sql, params)
        if cur.description:
            cur.fetchall()
    assert err.value.sqlstate == sqlstate, f"{sql}: {err.value.sqlstate} {err.value}"
    return err.value


def rows_of(tenant):
    with su(tenant="*") as c:
        return c.execute("SELECT id, content FROM docs WHERE tenant_id = %s ORDER BY id", (tenant,)).fetchall()


def stats(tenant, *cols):
    with su() as c:
        return c.execute(f"SELECT {', '.join(cols)} FROM ruvector.tenant_stats WHERE tenant_id = %s",
                         (tenant,)).fetchone()


@pytest.fixture(scope="module", autouse=True)
def database():
    with fresh_database(DB) as c:
        for role in ROLES:
            c.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') "
                      f"THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$")
            c.execute(f"ALTER ROLE {role} IN DATABASE {DB} RESET ALL")
        c.execute("GRANT ruvector_user TO rv_app, rv_bound, rv_owner, rv_owner2")
        c.execute("GRANT ruvector_admin TO rv_admin")
        c.execute("GRANT CREATE ON SCHEMA public TO rv_owner, rv_owner2")
        tenants = {"t1": {}, "t2": {}, "t3": {}, "t4": {}, "t5": {}, "t9": {},
                   "rl": {"max_qps": 20}, "q": {"max_vectors": 5}, "pre": {"max_vectors": 5},
                   "m": {}, "busy": {"max_qps": 0}, "quiet": {"max_qps": 0}}
        for t, opts in tenants.items():
            c.execute("SELECT ruvector_tenant_create(%s, %s)", (t, psycopg.types.json.Jsonb(opts)))
        c.execute("SELECT ruvector_tenant_bind_role('rv_bound', 't1')")
    with connect("rv_owner") as c:
        c.execute("""CREATE TABLE docs (id bigserial PRIMARY KEY,
                         tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                         content text, vec vector(3))""")
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec)")
        c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO ruvector_user")
        c.execute("GRANT SELECT ON docs TO ruvector_admin")
        c.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO ruvector_user")
    with su(tenant="*") as c:
        c.execute("""INSERT INTO docs (tenant_id, content, vec)
                     SELECT t, t || '-' || i, ARRAY[i, length(t), 1]::real[]::vector
                     FROM unnest(ARRAY['t1','t2','t3','t4','t5','t9','rl','busy','quiet']) t,
                          generate_series(1, 50) i""")
        c.execute("VACUUM ANALYZE docs")
    yield
    with su() as c:
        for role in ROLES:
            c.execute(f"ALTER ROLE {role} IN DATABASE {DB} RESET ALL")


# --- the setting changing while a statement runs -----------------------------------------

RESET_MIDWAY = [
    "SELECT tenant_id, content, set_config('ruvector.tenant_id', NULL, false) FROM docs",
    "INSERT INTO docs (tenant_id, content) SELECT 't2', 'planted' "
    "FROM (SELECT set_config('ruvector.tenant_id', NULL, false)) s",
    "UPDATE docs SET content = 'changed' WHERE (SELECT set_config('ruvector.tenant_id', NULL, false)) "
    "IS NOT NULL AND content IS NOT NULL",
    "DELETE FROM docs WHERE (SELECT set_config('ruvector.tenant_id', NULL, false)) IS NOT NULL "
    "AND content IS NOT NULL",
]


@pytest.mark.parametrize("role", ["rv_app", "rv_bound"])
@pytest.mark.parametrize("sql", RESET_MIDWAY, ids=["select", "insert", "update", "delete"])
def test_reset_to_an_unchecked_default_mid_statement_is_refused(role, sql):
    # The reset value t2 comes from the connection's options, checked only at first use.
    before = rows_of("t2")
    with connect(role, options="-c ruvector.tenant_id=t2") as c:
        c.execute("SET ruvector.tenant_id = 't1'")
        e = refused(c, sql, "42501")
        assert e.diag.message_primary == "the tenant context changed during the statement"
    assert rows_of("t2") == before


def test_reset_to_a_role_default_mid_statement_is_refused():
    with su() as c:
        c.execute(f"ALTER ROLE rv_app IN DATABASE {DB} SET ruvector.tenant_id = 't2'")
    try:
        with connect("rv_app") as c:
            c.execute("SET ruvector.tenant_id = 't1'")
            refused(c, RESET_MIDWAY[0], "42501")
            # Between statements, the default is an ordinary context of an unbound role.
            c.execute("RESET ruvector.tenant_id")
            assert {r[0] for r in c.execute("SELECT tenant_id FROM docs").fetchall()} == {"t2"}
    finally:
        with su() as c:
            c.execute(f"ALTER ROLE rv_app IN DATABASE {DB} RESET ruvector.tenant_id")


def test_a_cursor_outliving_its_functions_set_clause_is_refused():
    with connect("rv_app", options="-c ruvector.tenant_id=t2") as c:
        c.execute("""CREATE FUNCTION pg_temp.open_docs(c refcursor) RETURNS refcursor
                     LANGUAGE plpgsql SET ruvector.tenant_id = 't1'
                     AS $$ BEGIN OPEN c FOR SELECT tenant_id FROM docs; RETURN c; END $$""")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with c.transaction():
                c.execute("SELECT pg_temp.open_docs('c')")
                c.execute("FETCH ALL FROM c").fetchall()


def test_a_cursor_opened_before_a_suspension_stops_fetching():
    with connect("rv_app", tenant="t3") as c:
        try:
            with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
                with c.transaction():
                    c.execute("DECLARE cur CURSOR FOR SELECT tenant_id FROM docs")
                    assert c.execute("FETCH 5 FROM cur").fetchall() == [("t3",)] * 5
                    with su() as s:
                        s.execute("SELECT ruvector_tenant_suspend('t3')")
                    c.execute("FETCH ALL FROM cur").fetchall()
        finally:
            with su() as s:
                s.execute("SELECT ruvector_tenant_resume('t3')")


def test_statistics_views_validate_the_context():
    # A role bound to t1 that connects with t2 in its options reads nothing of t2's.
    with connect("rv_bound", options="-c ruvector.tenant_id=t2") as c:
        refused(c, "SELECT * FROM ruvector.my_tenant_stats", "42501")
        refused(c, "SELECT * FROM ruvector_tenant_stats('t2')", "42501")
        refused(c, "SELECT * FROM ruvector.my_collections", "42501")
    with connect("rv_bound", tenant="t1") as c:
        assert [r[0] for r in c.execute("SELECT tenant_id FROM ruvector.my_tenant_stats")] == ["t1"]
    with su() as s:
        s.execute("SELECT ruvector_tenant_suspend('t4')")
    try:
        with connect("rv_app", options="-c ruvector.tenant_id=t4") as c:
            refused(c, "SELECT * FROM ruvector.my_tenant_stats", "55000")
            refused(c, "SELECT * FROM ruvector_tenant_stats('t4')", "55000")
    finally:
        with su() as s:
            s.execute("SELECT ruvector_tenant_resume('t4')")


def test_defaults_cannot_bypass_a_binding_or_grant_the_wildcard():
    with connect("rv_bound", tenant="t1") as c:
        refused(c, f"ALTER ROLE CURRENT_USER IN DATABASE {DB} SET ruvector.tenant_id = 't2'", "42501")
        refused(c, "ALTER ROLE CURRENT_USER SET ruvector.tenant_id = 't2'", "42501")
        refused(c, "ALTER ROLE CURRENT_USER SET ruvector.tenant_id = '*'", "42501")
        c.execute(f"ALTER ROLE CURRENT_USER IN DATABASE {DB} SET ruvector.tenant_id = 't1'")
        c.execute(f"ALTER ROLE CURRENT_USER IN DATABASE {DB} RESET ruvector.tenant_id")
    with su() as c:
        refused(c, "ALTER ROLE rv_bound SET ruvector.tenant_id = 't2'", "42501")
        refused(c, "ALTER ROLE rv_app SET ruvector.tenant_id = '*'", "42501")
        refused(c, f"ALTER DATABASE {DB} SET ruvector.tenant_id = '*'", "42501")
        c.execute(f"ALTER ROLE rv_admin IN DATABASE {DB} SET ruvector.tenant_id = '*'")
        c.execute(f"ALTER ROLE rv_admin IN DATABASE {DB} RESET ruvector.tenant_id")


# --- functions open to PUBLIC -------------------------------------------------------------

OPEN_INTERNALS = {"_check_tenant_id", "_require_admin"}


def test_internal_functions_are_not_executable_by_public():
    with su() as c:
        rows = c.execute("""
            SELECT p.proname, p.oid::regprocedure::text,
                   p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a
                                               WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'),
                   has_function_privilege('rv_app', p.oid, 'EXECUTE'),
                   p.prorettype IN ('trigger'::regtype, 'event_trigger'::regtype)
            FROM pg_proc p
            JOIN pg_depend d ON d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
            JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'ruvector'""").fetchall()
    internal = [r for r in rows if r[0].startswith("_")]
    assert len(internal) >= 12
    open_to_public = {r[0] for r in internal if r[2]}
    assert open_to_public == OPEN_INTERNALS, "an internal function is open to PUBLIC"
    # The application role reaches only what the statistics views need.
    assert {r[0] for r in internal if r[3]} == OPEN_INTERNALS | {"_live_stats"}
    # Called directly (non-NULL arguments: a STRICT call with NULLs is folded away unchecked).
    sample = {"text": "'x'", "bigint": "0", "integer": "0", "real": "0", "double precision": "0",
              "boolean": "false"}
    with connect("rv_app", tenant="t1") as c:
        for name, sig, _, may, trigger in internal:
            if may or trigger:
                continue
            args = [a for a in sig[sig.index("(") + 1:-1].split(",") if a]
            refused(c, f"SELECT ruvector.{name}({', '.join(sample[a] for a in args)})", "42501")


@pytest.mark.parametrize("function", ["ruvector._quota_trigger()", "ruvector._collections_quota()",
                                      "ruvector._tenants_sync()"])
def test_internal_trigger_functions_cannot_be_attached(function):
    with connect("rv_app", tenant="t1") as c:
        c.execute("CREATE TEMP TABLE IF NOT EXISTS mine (tenant_id text, id int)")
        refused(c, f"CREATE TRIGGER probe AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION {function}",
                "42501")


def test_the_quota_trigger_acts_only_on_tenant_tables():
    # Even a superuser who attaches it elsewhere gets an error, not another tenant's counts.
    with su(tenant="t1") as c:
        c.execute("CREATE TABLE IF NOT EXISTS elsewhere (tenant_id text)")
        c.execute("DROP TRIGGER IF EXISTS probe ON elsewhere")
        c.execute("CREATE TRIGGER probe AFTER INSERT ON elsewhere FOR EACH ROW "
                  "EXECUTE FUNCTION ruvector._quota_trigger()")
        refused(c, "INSERT INTO elsewhere VALUES ('t2')", "0A000")
        c.execute("DROP TABLE elsewhere")


# --- privileged maintenance and table owners' code ------------------------------------------

def test_hard_delete_runs_an_owners_trigger_as_the_owner_without_any_context():
    with connect("rv_owner2") as c:
        c.execute("CREATE TABLE evil (id serial PRIMARY KEY, tenant_id text NOT NULL, x text)")
        c.execute("SELECT ruvector_enable_tenant_rls('evil')")
        c.execute("CREATE TABLE loot (what text, who text)")
        c.execute("""CREATE FUNCTION steal() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                INSERT INTO public.loot VALUES ('ran', current_user);
                BEGIN
                    INSERT INTO public.loot SELECT 'row:' || tenant_id, current_user FROM public.docs;
                EXCEPTION WHEN others THEN
                    INSERT INTO public.loot VALUES ('docs refused ' || SQLSTATE, current_user);
                END;
                BEGIN
                    ALTER ROLE rv_owner2 SUPERUSER;
                EXCEPTION WHEN others THEN
                    INSERT INTO public.loot VALUES ('superuser refused ' || SQLSTATE, current_user);
                END;
                RETURN OLD;
            END $$""")
        c.execute("CREATE TRIGGER steal AFTER DELETE ON evil FOR EACH ROW EXECUTE FUNCTION steal()")
    with su(tenant="*") as c:
        c.execute("INSERT INTO evil (tenant_id, x) VALUES ('t9', 'a'), ('t9', 'b')")
        deleted = dict(c.execute("SELECT table_name::text, rows_deleted FROM ruvector_tenant_delete('t9', hard := true)").fetchall())
        assert deleted["docs"] == 50 and deleted["evil"] == 2
        loot = c.execute("SELECT what, who FROM loot").fetchall()
        assert not c.execute("SELECT rolsuper FROM pg_roles WHERE rolname = 'rv_owner2'").fetchone()[0]
        assert c.execute("SELECT count(*) FROM docs WHERE tenant_id = 't9'").fetchone()[0] == 0
    assert {who for _, who in loot} == {"rv_owner2"}, "the owner's code ran as the owner"
    assert not [w for w, _ in loot if w.startswith("row:")], "no tenant's row was read"
    assert ("docs refused 28000", "rv_owner2") in loot
    assert ("superuser refused 42501", "rv_owner2") in loot


def test_roles_that_bypass_rls_still_write_only_their_contexts_rows():
    with su(tenant="t1") as c:
        refused(c, "DELETE FROM docs", "42501")
        refused(c, "UPDATE docs SET content = content WHERE tenant_id = 't2'", "42501")
        refused(c, "INSERT INTO docs (tenant_id, content) VALUES ('t2', 'x')", "42501")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with c.cursor().copy("COPY docs (tenant_id, content) FROM STDIN") as cp:
                cp.write_row(("t2", "copied"))
    assert len(rows_of("t2")) == 50


# --- object kinds ---------------------------------------------------------------------------

REGISTRATIONS = [
    ("CREATE TEMP TABLE r_temp (tenant_id text)", "r_temp", "0A000"),
    ("CREATE VIEW r_view AS SELECT 'x'::text AS tenant_id", "r_view", "42809"),
    ("CREATE MATERIALIZED VIEW r_mat AS SELECT 'x'::text AS tenant_id", "r_mat", "42809"),
    ("CREATE TABLE r_parted (tenant_id text) PARTITION BY LIST (tenant_id)", "r_parted", "0A000"),
    ("CREATE TABLE r_part PARTITION OF r_parted FOR VALUES IN ('t1')", "r_part", "0A000"),
    ("CREATE TABLE r_parent (tenant_id text); CREATE TABLE r_child () INHERITS (r_parent)", "r_parent", "0A000"),
    ("SELECT 1", "r_child", "0A000"),
    ("CREATE TABLE r_int (tenant_id int)", "r_int", "42804"),
    ("CREATE TABLE r_nocol (tenant text)", "r_nocol", "42703"),
    ("SELECT 1", "pg_class", "42501"),
]


@pytest.mark.parametrize("setup,table,sqlstate", REGISTRATIONS, ids=[r[1] for r in REGISTRATIONS])
def test_registration_refuses_what_rls_would_not_cover(setup, table, sqlstate):
    with connect("rv_owner") as c:
        for stmt in setup.split(";"):
            try:
                c.execute(stmt)
            except psycopg.errors.DuplicateTable:
                pass
        refused(c, "SELECT ruvector_enable_tenant_rls(%s)", sqlstate, (table,))


def test_registration_warns_about_leaky_definitions():
    with connect("rv_owner") as c:
        c.execute("DROP TABLE IF EXISTS handmade")
        c.execute("CREATE TABLE handmade (id serial PRIMARY KEY, tenant_id text NOT NULL)")
        c.execute("ALTER TABLE handmade ENABLE ROW LEVEL SECURITY")
        c.execute("CREATE POLICY spec_policy ON handmade USING (tenant_id = current_setting('ruvector.tenant_id', true))")
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("SELECT ruvector_enable_tenant_rls('handmade')")
    assert "unique index handmade_pkey of a tenant table is shared by all tenants" in notices
    assert 'policy "spec_policy" reads the setting ruvector.tenant_id' in notices


def test_registration_refuses_foreign_tables():
    with su() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS file_fdw")
        c.execute("CREATE SERVER IF NOT EXISTS files FOREIGN DATA WRAPPER file_fdw")
        c.execute("CREATE FOREIGN TABLE IF NOT EXISTS r_foreign (tenant_id text) SERVER files "
                  "OPTIONS (filename '/dev/null')")
        refused(c, "SELECT ruvector_enable_tenant_rls('r_foreign')", "42809")


@pytest.mark.parametrize("sql", [
    "CREATE TABLE docs_child () INHERITS (docs)",
    "CREATE TABLE adopter (id bigint, tenant_id text, content text, vec vector(3)); "
    "ALTER TABLE adopter INHERIT docs",
    "CREATE TABLE docs_parent (id bigint, tenant_id text, content text, vec vector(3)) "
    "PARTITION BY LIST (tenant_id); ALTER TABLE docs_parent ATTACH PARTITION docs FOR VALUES IN ('t1')",
])
def test_a_tenant_table_cannot_gain_children_or_parents(sql):
    with connect("rv_owner") as c:
        *setup, attack = sql.split("; ")
        for stmt in setup:
            c.execute(f"DROP TABLE IF EXISTS {stmt.split()[2]}")
            c.execute(stmt)
        refused(c, attack, "0A000")


def test_views_and_materialized_views_are_confined_by_the_context():
    with connect("rv_owner", tenant="t1") as c:
        c.execute("CREATE OR REPLACE VIEW docs_view AS SELECT tenant_id FROM docs")
        assert {r[0] for r in c.execute("SELECT tenant_id FROM docs_view")} == {"t1"}
        c.execute("DROP MATERIALIZED VIEW IF EXISTS docs_snapshot")
        c.execute("CREATE MATERIALIZED VIEW docs_snapshot AS SELECT tenant_id FROM docs")
        assert {r[0] for r in c.execute("SELECT tenant_id FROM docs_snapshot")} == {"t1"}
        c.execute("RESET ruvector.tenant_id")
        refused(c, "REFRESH MATERIALIZED VIEW docs_snapshot", "28000")
        refused(c, "SELECT * FROM docs_view", "28000")


def test_a_superusers_view_or_function_cannot_lift_rls_for_a_tenant():
    with su() as c:
        c.execute("CREATE OR REPLACE VIEW su_view AS SELECT tenant_id FROM docs")
        c.execute("CREATE OR REPLACE VIEW su_invoker_view WITH (security_invoker = true) AS SELECT tenant_id FROM docs")
        c.execute("CREATE OR REPLACE FUNCTION su_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
                  "AS 'SELECT count(*) FROM public.docs'")
        c.execute("GRANT SELECT ON su_view, su_invoker_view TO ruvector_user")
    with connect("rv_app", tenant="t1") as c:
        e = refused(c, "SELECT DISTINCT tenant_id FROM su_view", "42501")
        assert e.diag.message_primary == "row-level security would not confine this statement"
        refused(c, "SELECT su_count()", "42501")
        assert {r[0] for r in c.execute("SELECT tenant_id FROM su_invoker_view")} == {"t1"}
    with su(tenant="*") as c:
        assert len({r[0] for r in c.execute("SELECT tenant_id FROM su_view")}) > 2
    with connect("rv_admin", tenant="*") as c:
        assert c.execute("SELECT su_count()").fetchone()[0] > 50


# --- utility commands -----------------------------------------------------------------------

def test_copy_and_explain_need_a_context():
    with su() as c:
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            with c.cursor().copy("COPY docs TO STDOUT") as cp:
                list(cp)
    with connect("rv_app") as c:
        refused(c, "EXPLAIN SELECT * FROM docs", "28000")
        c.execute("SET ruvector.tenant_id = 't1'")
        c.execute("EXPLAIN SELECT * FROM docs").fetchall()
        # Rows Removed by Filter would count other tenants' rows.
        refused(c, "EXPLAIN ANALYZE SELECT * FROM docs", "42501")
    with connect("rv_admin", tenant="t1") as c:
        c.execute("EXPLAIN ANALYZE SELECT * FROM docs").fetchall()


def test_a_tenant_cannot_lock_every_tenant_out():
    with connect("rv_app", tenant="t1") as c:
        for mode in ["SHARE", "SHARE ROW EXCLUSIVE", "EXCLUSIVE", "ACCESS EXCLUSIVE"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with c.transaction():
                    c.execute(f"LOCK TABLE docs IN {mode} MODE")
        with c.transaction():
            c.execute("LOCK TABLE docs IN ROW EXCLUSIVE MODE")
        # Through a view of one's own, which locks the tables it reads.
        c.execute("CREATE TEMP VIEW my_docs AS SELECT * FROM (SELECT * FROM docs) d")
        c.execute("CREATE TEMP VIEW my_docs2 AS SELECT * FROM my_docs")
        for view in ["my_docs", "my_docs2"]:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                with c.transaction():
                    c.execute(f"LOCK TABLE {view} IN ACCESS EXCLUSIVE MODE")
        c.execute("RESET ruvector.tenant_id")
        with pytest.raises(psycopg.errors.InvalidAuthorizationSpecification):
            with c.transaction():
                c.execute("LOCK TABLE docs IN ACCESS SHARE MODE")


# --- conditions that name another tenant ---------------------------------------------------

@pytest.mark.parametrize("sql", [
    "SELECT id FROM docs WHERE tenant_id = 't2'",
    "SELECT id FROM docs WHERE 't2' = tenant_id",
    "SELECT id FROM docs WHERE tenant_id IN ('t1', 't2')",
    "SELECT id FROM docs WHERE tenant_id = ANY (ARRAY['t2'])",
    "SELECT id FROM docs WHERE id > 0 AND (content = 'x' OR tenant_id = 't2')",
    "SELECT id FROM docs WHERE tenant_id = 't2'::varchar",
    "SELECT count(*) FROM (SELECT id FROM docs WHERE tenant_id = 't2' LIMIT 5) s",
    "WITH o AS MATERIALIZED (SELECT id FROM docs WHERE tenant_id = 't2') SELECT count(*) FROM o",
    "SELECT id FROM docs d WHERE EXISTS (SELECT 1 FROM docs e WHERE e.tenant_id = 't2' AND e.id = d.id)",
    "SELECT id FROM docs WHERE tenant_id = 't2' ORDER BY vec <-> ARRAY[1, 2, 3]::real[]::vector LIMIT 3",
    "UPDATE docs SET content = content WHERE tenant_id = 't2'",
    "DELETE FROM docs WHERE tenant_id = 't2' AND id < 0",
])
def test_a_statement_whose_conditions_name_another_tenant_is_refused(sql):
    before = rows_of("t2")
    with connect("rv_app", tenant="t1") as c:
        e = refused(c, sql, "42501")
        assert 'tenant "t2"' in e.diag.message_primary
        # The same statement about the tenant itself runs.
        c.execute(sql.replace("'t2'", "'t1'")).fetchall() if sql.startswith(("SELECT", "WITH")) \
            else c.execute(sql.replace("'t2'", "'t1'"))
    assert rows_of("t2") == before


def test_conditions_on_the_own_tenant_or_under_the_wildcard_pass():
    with connect("rv_app", tenant="t1") as c:
        own = c.execute("SELECT count(*) FROM docs").fetchone()[0]
        assert c.execute("SELECT count(*) FROM docs WHERE tenant_id = 't1'").fetchone()[0] == own
    with su(tenant="*") as c:
        assert c.execute("SELECT count(*) FROM docs WHERE tenant_id = 't2'").fetchone()[0] == len(rows_of("t2"))


# --- resources ------------------------------------------------------------------------------

def test_idle_cursors_hold_no_execution_slot():
    with su() as c:
        capacity = c.execute("SELECT capacity FROM ruvector_admission_status()").fetchone()[0]
    holders = [connect("rv_app", tenant="busy") for _ in range(capacity + 2)]
    try:
        for h in holders:
            h.execute("BEGIN")
            h.execute("DECLARE cur CURSOR FOR SELECT id FROM docs")
            assert len(h.execute("FETCH 1 FROM cur").fetchall()) == 1
        with su() as c:
            assert c.execute("SELECT running FROM ruvector_admission_status()").fetchone()[0] == 0
        with connect("rv_app", tenant="quiet") as q:
            start = time.monotonic()
            assert q.execute("SELECT count(*) FROM docs").fetchone()[0] == 50
            assert time.monotonic() - start < 5.0, "an idle cursor kept a slot"
        for h in holders:
            assert len(h.execute("FETCH 1 FROM cur").fetchall()) == 1
    finally:
        for h in holders:
            h.close()


def test_nested_statements_and_repeated_searches_count_against_the_rate_limit():
    with connect("rv_app", tenant="rl") as c:
        e = refused(c, "DO $$ BEGIN FOR i IN 1..200 LOOP PERFORM count(*) FROM docs; END LOOP; END $$", "53000")
        assert e.diag.message_detail.startswith("retry after ")
        time.sleep(1.5)  # the bucket refills (20 per second, burst 20)
        c.execute("SET enable_seqscan = off")
        plan = "\n".join(r[0] for r in c.execute(
            "EXPLAIN SELECT s.id FROM generate_series(1, 200) g, "
            "LATERAL (SELECT id FROM docs ORDER BY vec <-> ARRAY[g, 2, 1]::real[]::vector LIMIT 1) s"))
        assert "docs_vec" in plan, plan
        refused(c, "SELECT s.id FROM generate_series(1, 200) g, "
                   "LATERAL (SELECT id FROM docs ORDER BY vec <-> ARRAY[g, 2, 1]::real[]::vector LIMIT 1) s",
                "53000")
        time.sleep(1.5)
        # One statement with one search costs one token.
        for _ in range(10):
            c.execute("SELECT id FROM docs ORDER BY vec <-> '[1,2,1]' LIMIT 3").fetchall()


def test_foreign_key_checks_are_part_of_their_statement():
    # PostgreSQL checks a foreign key with one query per written row; against a tenant table
    # those are not statements of the tenant's own and take no token.
    with connect("rv_owner") as c:
        c.execute("CREATE TABLE IF NOT EXISTS notes (doc_id bigint REFERENCES docs (id), note text)")
        c.execute("GRANT SELECT, INSERT ON notes TO ruvector_user")
    time.sleep(1.5)
    with connect("rv_app", tenant="rl") as c:
        ids = [r[0] for r in c.execute("SELECT id FROM docs ORDER BY id")]
        assert len(ids) == 50
        c.execute("INSERT INTO notes SELECT id, 'n' FROM docs, generate_series(1, 4)")
        assert c.execute("SELECT count(*) FROM notes").fetchone()[0] >= 200


def test_on_conflict_charges_only_rows_written():
    with connect("rv_app", tenant="q") as c:
        c.execute("INSERT INTO docs (id, content) VALUES (900001, 'a'), (900002, 'b'), (900003, 'c')")
        for _ in range(10):
            c.execute("INSERT INTO docs (id, content) VALUES (900001, 'again') ON CONFLICT (id) DO NOTHING")
            c.execute("INSERT INTO docs (id, content) VALUES (900002, 'x') "
                      "ON CONFLICT (id) DO UPDATE SET content = excluded.content")
        assert stats("q", "current_vectors", "reserved_vectors") == (3, 0)
        c.execute("INSERT INTO docs (id, content) VALUES (900004, 'd'), (900005, 'e')")
        refused(c, "INSERT INTO docs (id, content) VALUES (900006, 'f')", "53400")
    assert stats("q", "current_vectors") == (5,)


def test_rows_present_before_registration_count_against_the_quota():
    with connect("rv_owner") as c:
        c.execute("DROP TABLE IF EXISTS early")
        c.execute("CREATE TABLE early (id serial PRIMARY KEY, tenant_id text NOT NULL "
                  "DEFAULT current_setting('ruvector.tenant_id'), x text)")
        c.execute("INSERT INTO early (tenant_id, x) SELECT 'pre', 'x' FROM generate_series(1, 5)")
        c.execute("SELECT ruvector_enable_tenant_rls('early')")
        c.execute("GRANT SELECT, INSERT, DELETE ON early TO ruvector_user")
        c.execute("GRANT USAGE ON SEQUENCE early_id_seq TO ruvector_user")
    assert stats("pre", "current_vectors") == (5,)
    with connect("rv_app", tenant="pre") as c:
        refused(c, "INSERT INTO early (x) VALUES ('over')", "53400")
        c.execute("DELETE FROM early")
    assert stats("pre", "current_vectors") == (0,), "usage never goes below zero"


def test_collection_metadata_is_bounded():
    with connect("rv_app", tenant="t1") as c:
        big = psycopg.types.json.Jsonb({"metadata": {"blob": "x" * 100_000}})
        refused(c, "SELECT ruvector_collection_create('big', %s)", "54000", (big,))
        c.execute("SELECT ruvector_collection_create('small', %s)",
                  (psycopg.types.json.Jsonb({"metadata": {"a": 1}}),))


def test_merge_is_counted_and_audited():
    with su() as c:
        c.execute(f"ALTER ROLE rv_app IN DATABASE {DB} SET ruvector.audit_enabled = on")
    try:
        before = stats("m", "updates")[0]
        with connect("rv_app", tenant="m") as c:
            c.execute("""MERGE INTO docs d USING (VALUES (800001, 'merged')) s(id, content) ON d.id = s.id
                         WHEN MATCHED THEN UPDATE SET content = s.content
                         WHEN NOT MATCHED THEN INSERT (id, content) VALUES (s.id, s.content)""")
        assert stats("m", "updates")[0] == before + 1
        assert rows_of("m") == [(800001, "merged")]
        with su() as c:
            ops = [r[0] for r in c.execute(
                "SELECT operation FROM ruvector.tenant_audit_log WHERE tenant_id = 'm' ORDER BY id")]
        assert "merge" in ops
    finally:
        with su() as c:
            c.execute(f"ALTER ROLE rv_app IN DATABASE {DB} RESET ruvector.audit_enabled")


def test_dropped_databases_free_their_place_in_the_registry():
    # 64 databases can have their tenants loaded at once; dropping one frees its place.
    with su("postgres") as c:
        for i in range(70):
            name = f"ruvector_churn_{i % 3}"
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {name}")
            with su(name) as d:
                d.execute("CREATE EXTENSION ruvector")
                d.execute("SELECT ruvector_tenant_create('a')")
                d.execute("CREATE TABLE t (tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'))")
                d.execute("SELECT ruvector_enable_tenant_rls('t')")
                d.execute("SET ruvector.tenant_id = 'a'")
                d.execute("INSERT INTO t DEFAULT VALUES")
                assert d.execute("SELECT count(*) FROM t").fetchone()[0] == 1
            c.execute(f"DROP DATABASE {name} WITH (FORCE)")


# --- weakening a tenant table's confinement ----------------------------------------------

WEAKENING = [
    "ALTER TABLE docs DISABLE ROW LEVEL SECURITY",
    "ALTER TABLE docs NO FORCE ROW LEVEL SECURITY",
    "ALTER POLICY tenant_isolation ON docs USING (true)",
    "DROP POLICY tenant_isolation ON docs",
    "DROP POLICY IF EXISTS admin_bypass ON public.docs",
    "CREATE POLICY open ON docs USING (true)",
    "CREATE POLICY open ON docs AS PERMISSIVE FOR SELECT TO rv_app USING (true)",
    "DROP TRIGGER ruvector_quota ON docs",
    "ALTER TABLE docs DISABLE TRIGGER ruvector_quota",
    "ALTER TABLE docs DISABLE TRIGGER ALL",
    "ALTER TABLE docs DISABLE TRIGGER USER",
]


@pytest.mark.parametrize("sql", WEAKENING)
def test_the_owner_cannot_weaken_a_tenant_tables_confinement(sql):
    with connect("rv_owner") as c:
        e = refused(c, sql, "42501")
        assert "is refused" in e.diag.message_primary
    # Without a context, a superuser cannot either; nothing changed.
    with su() as c:
        refused(c, sql, "42501")
        assert c.execute("SELECT relrowsecurity AND relforcerowsecurity FROM pg_class "
                         "WHERE oid = 'docs'::regclass").fetchone()[0]
        assert c.execute("SELECT count(*) FROM pg_policy WHERE polrelid = 'docs'::regclass").fetchone()[0] == 2
        assert c.execute("SELECT tgenabled FROM pg_trigger WHERE tgname = 'ruvector_quota' "
                         "AND tgrelid = 'docs'::regclass").fetchone()[0] == "O"


def test_a_restrictive_policy_and_an_administrators_change_are_allowed():
    with connect("rv_owner") as c:
        c.execute("CREATE POLICY no_secrets ON docs AS RESTRICTIVE USING (content IS DISTINCT FROM 'secret')")
        c.execute("DROP POLICY no_secrets ON docs")  # not one of ours: weakens nothing
        c.execute("DROP TABLE IF EXISTS scratch")
        c.execute("CREATE TABLE scratch (id int, tenant_id text NOT NULL)")
        c.execute("SELECT ruvector_enable_tenant_rls('scratch')")
        c.execute("GRANT ALL ON scratch TO rv_admin")
    with connect("rv_admin", "*") as c:
        refused(c, "ALTER TABLE scratch DISABLE ROW LEVEL SECURITY", "42501")  # not its owner
    with su(tenant="*") as c:
        notices = []
        c.add_notice_handler(lambda d: notices.append(d.message_primary))
        c.execute("ALTER TABLE scratch NO FORCE ROW LEVEL SECURITY")
        assert any("no longer confined" in n for n in notices), notices
        c.execute("DROP TABLE scratch")


def test_administrators_update_limits_through_tenant_quotas():
    with connect("rv_admin") as c:
        c.execute("UPDATE ruvector.tenant_quotas SET max_vectors = 77, max_qps = 33 WHERE tenant_id = 't5'")
        assert c.execute("SELECT max_vectors, max_qps FROM ruvector.tenants WHERE id = 't5'").fetchone() == (77, 33)
        refused(c, "UPDATE ruvector.tenant_quotas SET current_vectors = 0 WHERE tenant_id = 't5'", "42501")
        c.execute("UPDATE ruvector.tenant_quotas SET max_vectors = 1000000, max_qps = 100 WHERE tenant_id = 't5'")
    with connect("rv_app", "t5") as c:
        refused(c, "UPDATE ruvector.tenant_quotas SET max_vectors = 1", "42501")
