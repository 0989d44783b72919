"""Moving a tenant to another server with PostgreSQL's logical replication, as
docs/operations.md describes it: the tenant's catalog rows exported and imported, its rows
replicated through a publication with a row filter on the tenant column while the
application keeps writing, then the cut-over (suspend on the source, wait for the subscriber
to catch up, recount, resume on the target). No row lost, nothing of another tenant moved."""

import math
import threading
import time

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from cluster_control import fresh_cluster

SOURCE_PORT, TARGET_PORT = 28832, 28833
DIMS = 8


def setup_server(dsn):
    """Database `app` with a tenant table and a tenant-keyed ruhnsw index, as an application
    deploys it on every server; returns a superuser connection string to it."""
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("CREATE DATABASE app")
        c.execute("CREATE ROLE app_acme LOGIN")
    app = make_conninfo(dsn, dbname="app")
    with psycopg.connect(app, autocommit=True) as c:
        c.execute("CREATE EXTENSION ruvector")
        c.execute("GRANT ruvector_user TO app_acme")
        c.execute(f"""CREATE TABLE docs (
            id bigserial, tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
            body text, embedding vector({DIMS}), PRIMARY KEY (tenant_id, id))""")
        c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO app_acme")
        c.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO app_acme")
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("CREATE INDEX ON docs USING ruhnsw (embedding vector_l2_ops)")
    return app


def vec(i):
    return "[" + ",".join("%.4f" % math.sin(i * 0.7318 + k * 1.3712) for k in range(DIMS)) + "]"


def rows_of(dsn, tenant):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SET ruvector.tenant_id = '*'")
        return sorted(c.execute("SELECT tenant_id, id, body, embedding::text FROM docs WHERE tenant_id = %s",
                                (tenant,)).fetchall())


def test_a_tenant_moves_to_another_server_with_no_row_lost():
    with fresh_cluster("move-source", SOURCE_PORT, "wal_level = logical") as source_dsn, \
            fresh_cluster("move-target", TARGET_PORT, "max_worker_processes = 16") as target_dsn:
        src, dst = setup_server(source_dsn), setup_server(target_dsn)

        with psycopg.connect(src, autocommit=True) as c:
            # A quota the live writes below cannot reach however long the copy takes (a writer
            # inserts several hundred rows a second): only the suspension may refuse them.
            c.execute("""SELECT ruvector_tenant_create('acme', '{"display_name": "Acme", "max_vectors": 500000,
                         "max_qps": 0, "weight": 2}')""")
            c.execute("""SELECT ruvector_tenant_create('beta', '{"max_qps": 0}')""")
            c.execute("SELECT ruvector_tenant_bind_role('app_acme', 'acme')")
            c.execute("SET ruvector.tenant_id = 'acme'")
            c.execute("SELECT ruvector_collection_create('kb', '{\"dimensions\": 8}')")
            c.execute("RESET ruvector.tenant_id")
            c.execute("""INSERT INTO ruvector.integrity_policies (tenant_id, name, threshold_high, threshold_low)
                         VALUES ('acme', 'strict', 0.6, 0.3)""")
            for tenant, n in (("acme", 1500), ("beta", 300)):
                c.execute(f"SET ruvector.tenant_id = '{tenant}'")
                with c.cursor().copy("COPY docs (body, embedding) FROM STDIN") as copy:
                    for i in range(n):
                        copy.write_row([f"{tenant} {i}", vec(i)])
            c.execute("RESET ruvector.tenant_id")
            export = c.execute("SELECT ruvector_tenant_export('acme')").fetchone()[0]
        assert export["tenant"]["max_vectors"] == 500000 and export["tenant"]["weight"] == 2
        assert [x["name"] for x in export["collections"]] == ["kb"]
        assert [(p["name"], p["threshold_high"]) for p in export["integrity_policies"]] == [("strict", 0.6)]
        assert export["role_bindings"] == ["app_acme"]

        with psycopg.connect(dst, autocommit=True) as c:
            imported = c.execute("SELECT id, max_vectors, weight, suspended_at IS NOT NULL "
                                 "FROM ruvector_tenant_import(%s)", (psycopg.types.json.Jsonb(export),)).fetchone()
            assert imported == ("acme", 500000, 2.0, True), "imported suspended, with its limits"
            with pytest.raises(psycopg.errors.DuplicateObject):
                c.execute("SELECT ruvector_tenant_import(%s)", (psycopg.types.json.Jsonb(export),))
            assert c.execute("SELECT tenant_id FROM ruvector.tenant_role_bindings").fetchall() == [("acme",)]

        # The application keeps writing (and deleting) acme's rows on the source meanwhile.
        stop, written, refused = threading.Event(), [], []

        def application():
            with psycopg.connect(make_conninfo(src, user="app_acme"), autocommit=True) as app:
                app.execute("SET ruvector.tenant_id = 'acme'")
                i = 0
                while not stop.is_set():
                    try:
                        with app.transaction():
                            app.execute("INSERT INTO docs (body, embedding) VALUES (%s, %s)",
                                        (f"acme live {i}", vec(i)))
                            if i % 10 == 0:
                                app.execute("DELETE FROM docs WHERE body = %s", (f"acme {i}",))
                        written.append(i)
                    except psycopg.Error as e:  # 55000 once acme is suspended
                        refused.append(e.sqlstate)
                        time.sleep(0.05)
                    i += 1
        writer = threading.Thread(target=application)
        writer.start()
        try:
            with psycopg.connect(src, autocommit=True) as c:
                c.execute("CREATE PUBLICATION move_acme FOR TABLE docs WHERE (tenant_id = 'acme')")
            with psycopg.connect(dst, autocommit=True) as c:
                # The initial copy runs a query on the source: its session needs acme's context.
                conn = make_conninfo(src, options="-c ruvector.tenant_id=acme")
                c.execute(sql.SQL("CREATE SUBSCRIPTION move_acme CONNECTION {} PUBLICATION move_acme")
                          .format(sql.Literal(conn)))
                deadline = time.monotonic() + 120
                while c.execute("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'").fetchone()[0]:
                    assert time.monotonic() < deadline, "the initial copy did not finish"
                    time.sleep(0.2)
            time.sleep(1)  # a little more live traffic through the stream

            # Cut-over: acme's writes stop on the source; the target catches up with them.
            with psycopg.connect(src, autocommit=True) as c:
                c.execute("SELECT ruvector_tenant_suspend('acme')")
                lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
                deadline = time.monotonic() + 60
                while not c.execute("SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                                    "WHERE slot_name = 'move_acme'", (lsn,)).fetchone()[0]:
                    assert time.monotonic() < deadline, "the target did not catch up"
                    time.sleep(0.1)
            deadline = time.monotonic() + 10
            while not refused and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            writer.join()
        assert refused and set(refused) == {"55000"}, f"refused only once acme was suspended: {refused}"
        assert len(written) > 10, "the application wrote during the move"

        with psycopg.connect(dst, autocommit=True) as c:
            c.execute("DROP SUBSCRIPTION move_acme")
            c.execute("SET ruvector.tenant_id = '*'")
            c.execute("SELECT setval('docs_id_seq', (SELECT max(id) FROM docs))")
            c.execute("RESET ruvector.tenant_id")
            counted = c.execute("SELECT vectors FROM ruvector_tenant_recount('acme')").fetchone()[0]
            c.execute("SELECT ruvector_tenant_resume('acme')")
        with psycopg.connect(src, autocommit=True) as c:
            c.execute("DROP PUBLICATION move_acme")

        moved = rows_of(dst, "acme")
        assert moved == rows_of(src, "acme"), "every row of acme, as on the source"
        assert counted == len(moved) == 1500 + len(written) - len([i for i in written if i % 10 == 0 and i < 1500])
        assert rows_of(dst, "beta") == [], "nothing of another tenant"

        with psycopg.connect(make_conninfo(dst, user="app_acme"), autocommit=True) as app:
            # The bound role works on the target, searches go through the moved index, and the
            # quota counts the moved rows.
            app.execute("SET ruvector.tenant_id = 'acme'")
            app.execute("INSERT INTO docs (body, embedding) VALUES ('after the move', %s)", (vec(1),))
            found = app.execute("SELECT tenant_id FROM docs ORDER BY embedding <-> %s LIMIT 10", (vec(5),)).fetchall()
            assert found == [("acme",)] * 10
        with psycopg.connect(dst, autocommit=True) as c:
            usage = c.execute("SELECT current_vectors FROM ruvector.tenant_quotas WHERE tenant_id = 'acme'").fetchone()[0]
            assert usage == len(moved) + 1
            checks = c.execute("SELECT \"check\", ok, detail FROM ruvector_index_check('docs_embedding_tenant_id_idx')").fetchall()
            assert all(ok for _, ok, _ in checks), checks


def test_export_and_import_are_for_admins_and_check_their_input():
    with fresh_cluster("move-checks", TARGET_PORT) as dsn:
        app = setup_server(dsn)
        with psycopg.connect(app, autocommit=True) as c:
            c.execute("SELECT ruvector_tenant_create('acme')")
            with pytest.raises(psycopg.errors.UndefinedObject):
                c.execute("SELECT ruvector_tenant_export('nobody')")
            with pytest.raises(psycopg.errors.InvalidParameterValue):
                c.execute("SELECT ruvector_tenant_import('{\"format\": 2}')")
            c.execute("SET ROLE app_acme")
            for sql in ("SELECT ruvector_tenant_export('acme')", "SELECT ruvector_tenant_recount('acme')",
                        "SELECT ruvector._recount('acme')"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    c.execute(sql)
