"""A database with tenants, an application role and a tenant table, for the isolation tests.

Roles (cluster-wide, created once): rv_app (LOGIN, member of ruvector_user; neither SUPERUSER
nor BYPASSRLS), rv_owner (owns the tenant table), rv_admin (member of ruvector_admin),
rv_app_acme (bound to tenant acme).
"""

import os

import psycopg

DB = "ruvector_tenancy"

# The specification's Monitoring query, verbatim.
MONITORING = """
SELECT
    t.id,
    t.display_name,
    t.isolation_level,
    tq.current_vectors,
    tq.max_vectors,
    ROUND(100.0 * tq.current_vectors / tq.max_vectors, 1) AS usage_pct,
    ts.integrity_state,
    ts.lambda_cut,
    ts.avg_search_latency_ms,
    ts.searches_last_hour
FROM ruvector.tenants t
JOIN ruvector.tenant_quotas tq ON t.id = tq.tenant_id
JOIN ruvector.tenant_stats ts ON t.id = ts.tenant_id
ORDER BY tq.current_vectors DESC;
"""


def admin_dsn(db="postgres"):
    base = os.environ.get("RUVECTOR_PG15_DSN")
    if not base:
        raise RuntimeError("RUVECTOR_PG15_DSN is not set; run scripts/test")
    return psycopg.conninfo.make_conninfo(base, dbname=db)


def dsn(user, db=DB):
    return psycopg.conninfo.make_conninfo(admin_dsn(db), user=user)


def connect(user, **kw):
    return psycopg.connect(dsn(user), autocommit=True, **kw)


def fresh_database(name):
    """Recreates database `name` with ruvector and a connection role rv_app (ruvector_user);
    returns a superuser connection to it."""
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
        c.execute("""DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rv_app')
                     THEN CREATE ROLE rv_app LOGIN NOSUPERUSER NOBYPASSRLS; END IF; END $$""")
    c = psycopg.connect(admin_dsn(name), autocommit=True)
    c.execute("CREATE EXTENSION ruvector")
    c.execute("GRANT ruvector_user TO rv_app")
    return c


def setup_database():
    with fresh_database(DB) as c:
        for role, extra in [("rv_app", ""), ("rv_owner", ""), ("rv_admin", ""), ("rv_app_acme", "")]:
            c.execute(
                f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') "
                f"THEN CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS {extra}; END IF; END $$"
            )
        c.execute("GRANT ruvector_user TO rv_app, rv_app_acme, rv_owner")
        c.execute("GRANT ruvector_admin TO rv_admin")
        c.execute(f"GRANT CREATE ON DATABASE {DB} TO rv_owner")
        c.execute("GRANT CREATE ON SCHEMA public TO rv_owner")
        for t in ("acme", "beta", "gamma"):
            c.execute("SELECT ruvector_tenant_create(%s, %s)", (t, '{"max_vectors": 100000, "max_qps": 0}'))
    with connect("rv_owner") as c:
        c.execute(
            """CREATE TABLE embeddings (
                   id         bigserial PRIMARY KEY,
                   tenant_id  text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                   content    text,
                   vec        vector(3),
                   created_at timestamptz DEFAULT now()
               )"""
        )
        c.execute("CREATE INDEX ON embeddings (tenant_id)")
        c.execute("CREATE INDEX ON embeddings (content)")
        c.execute("SELECT ruvector_enable_tenant_rls('embeddings')")
        c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON embeddings TO ruvector_user")
        c.execute("GRANT USAGE ON SEQUENCE embeddings_id_seq TO ruvector_user")
        # A plain table without tenancy, for joins.
        c.execute("CREATE TABLE labels (content text PRIMARY KEY, label text)")
        c.execute("GRANT SELECT ON labels TO ruvector_user")
        c.execute("INSERT INTO labels SELECT 'doc-' || t || '-' || i, t FROM unnest(ARRAY['acme','beta','gamma']) t, generate_series(1, 50) i")
        # A view and a SECURITY DEFINER function owned by the table owner.
        c.execute("CREATE VIEW all_embeddings AS SELECT * FROM embeddings")
        c.execute("GRANT SELECT ON all_embeddings TO ruvector_user")
        c.execute(
            "CREATE FUNCTION count_all() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
            "AS 'SELECT count(*) FROM embeddings'"
        )
    for t in ("acme", "beta", "gamma"):
        with connect("rv_app") as c:
            c.execute("SET ruvector.tenant_id = %s" % psycopg.sql.quote(t))
            with c.cursor() as cur:
                cur.executemany(
                    "INSERT INTO embeddings (content, vec) VALUES (%s, %s::vector)",
                    [(f"doc-{t}-{i}", f"[{i},{len(t)},1]") for i in range(1, 51)],
                )
    with psycopg.connect(admin_dsn(DB), autocommit=True) as c:
        c.execute("ANALYZE embeddings")
