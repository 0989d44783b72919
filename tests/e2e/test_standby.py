"""Tenants on a streaming hot standby: the standby's registry follows the primary's catalog
(a tenant created, suspended, resumed and deleted there is served or refused on the standby
as on the primary, in sessions opened before and after the change), audit never writes on
a standby (its records go to the server log), and a promotion in the middle of a search
workload keeps serving, with each tenant's usage counted again for its quota."""

import os
import threading
import time

import psycopg
import pytest

from cluster_control import pg15, standby, wait_for_replay
from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_standby"
PORT = 28823
NAME = "tenancy-standby"
SEARCH = "SELECT id FROM sb_docs ORDER BY v <-> '[0.5,0.2,0]' LIMIT 3"


def outcome(conn, tenant):
    """What a session of `conn` gets when it counts its rows under `tenant`: the count, or the
    SQLSTATE of the refusal."""
    try:
        conn.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
        return conn.execute("SELECT count(*) FROM sb_docs").fetchone()[0]
    except psycopg.Error as e:
        return e.sqlstate


def lsn(su):
    return su.execute("SELECT pg_current_wal_lsn()").fetchone()[0]


@pytest.fixture
def primary():
    su = fresh_database(DB)
    su.execute("ALTER DATABASE ruvector_standby SET ruvector.audit_enabled = on")
    su.execute("""CREATE TABLE sb_docs (
                      id bigserial,
                      tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                      v vector(3),
                      PRIMARY KEY (tenant_id, id))""")
    su.execute("GRANT SELECT, INSERT ON sb_docs TO rv_app")
    su.execute("GRANT USAGE ON SEQUENCE sb_docs_id_seq TO rv_app")
    su.execute("SELECT ruvector_enable_tenant_rls('sb_docs')")
    su.execute("CREATE INDEX ON sb_docs USING ruhnsw (v vector_l2_ops)")
    su.execute("""SELECT ruvector_tenant_create('sb-a', '{"max_vectors": 10, "max_qps": 0}')""")
    su.execute("SET ruvector.tenant_id = 'sb-a'")
    su.execute("INSERT INTO sb_docs (v) SELECT ARRAY[i, 0, 0]::real[]::vector FROM generate_series(1, 5) i")
    su.execute("RESET ruvector.tenant_id")
    yield su
    su.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def test_a_standby_follows_the_tenant_lifecycle_and_takes_over_on_promotion(primary):
    su = primary
    app_dsn = psycopg.conninfo.make_conninfo(admin_dsn(DB), user="rv_app")
    with standby(su, NAME, PORT):
        sdsn = psycopg.conninfo.make_conninfo(app_dsn, port=PORT)
        data = os.environ["RUVECTOR_PG15_DATA"] + "-" + NAME
        with psycopg.connect(app_dsn, autocommit=True) as p, psycopg.connect(sdsn, autocommit=True) as early:
            wait_for_replay(early, lsn(su))
            # The session opened first loads the standby's registry, counting sb-a's 5 rows.
            assert outcome(early, "sb-a") == 5
            su.execute("SET ruvector.tenant_id = 'sb-a'")
            su.execute("INSERT INTO sb_docs (v) SELECT ARRAY[i, 1, 0]::real[]::vector FROM generate_series(1, 3) i")
            su.execute("RESET ruvector.tenant_id")

            # Each change on the primary, and what a count of sb-b's rows then gives.
            steps = [
                ("create", "SELECT ruvector_tenant_create('sb-b', '{\"max_qps\": 0}')", 0),
                ("insert", None, 2),
                ("suspend", "SELECT ruvector_tenant_suspend('sb-b')", "55000"),
                ("resume", "SELECT ruvector_tenant_resume('sb-b')", 2),
                ("delete", "SELECT ruvector_tenant_delete('sb-b')", "42704"),
            ]
            assert outcome(p, "sb-b") == outcome(early, "sb-b") == "42704"
            for step, sql, want in steps:
                if sql is None:
                    su.execute("SET ruvector.tenant_id = 'sb-b'")
                    su.execute("INSERT INTO sb_docs (v) VALUES ('[9,9,9]'), ('[8,8,8]')")
                    su.execute("RESET ruvector.tenant_id")
                else:
                    su.execute(sql)
                started = time.monotonic()
                wait_for_replay(early, lsn(su))
                assert outcome(p, "sb-b") == want, f"after {step}, the primary"
                # A session open since before the change, and one opened after it.
                assert outcome(early, "sb-b") == want, f"after {step}, the open standby session answers as the primary"
                with psycopg.connect(sdsn, autocommit=True) as late:
                    assert outcome(late, "sb-b") == want, f"after {step}, a new standby session answers as the primary"
                assert time.monotonic() - started < 10, f"the standby followed the {step} within seconds"
            assert outcome(early, "sb-a") == 8
            p.execute("SET ruvector.tenant_id = 'sb-a'")
            expected = [r[0] for r in p.execute(SEARCH).fetchall()]
            assert len(expected) == 3

            # Audit is on: a standby serves and refuses without trying to write the audit log.
            try:
                early.execute("RESET ruvector.tenant_id")
                early.execute("SELECT count(*) FROM sb_docs")
                raise AssertionError("a statement without a tenant context was served")
            except psycopg.Error as e:
                assert e.sqlstate == "28000", e
            with open(os.path.join(data, "server.log")) as f:
                log = f.read()
            assert "ruvector audit on a standby" in log and '"refused:' in log and "sqlstate" in log, log[-2000:]
            assert "read-only transaction" not in log, log[-2000:]

        # A promotion in the middle of a search workload on the standby.
        errors, answers, stop = [], [], threading.Event()

        def search():
            with psycopg.connect(sdsn, autocommit=True) as s:
                s.execute("SET ruvector.tenant_id = 'sb-a'")
                while not stop.is_set():
                    try:
                        answers.append([r[0] for r in s.execute(SEARCH).fetchall()])
                    except psycopg.Error as e:
                        errors.append(e)
                    time.sleep(0.005)

        worker = threading.Thread(target=search)
        worker.start()
        time.sleep(0.5)
        pg15("pg_ctl", "-D", data, "-w", "-t", "60", "promote")
        time.sleep(0.5)
        stop.set()
        worker.join(timeout=30)
        assert not errors, errors[:3]
        assert len(answers) > 10 and all(a == expected for a in answers), answers[:3]

        with psycopg.connect(sdsn, autocommit=True) as s:
            assert not s.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            s.execute("SET ruvector.tenant_id = 'sb-a'")
            # The quota counts the 8 rows the standby replayed: 2 more fit, the third does not.
            s.execute("INSERT INTO sb_docs (v) VALUES ('[7,7,7]'), ('[6,6,6]')")
            with pytest.raises(psycopg.Error) as refused:
                s.execute("INSERT INTO sb_docs (v) VALUES ('[5,5,5]')")
            assert refused.value.sqlstate == "53400", refused.value
            assert s.execute("SELECT count(*) FROM sb_docs").fetchone()[0] == 10
        with psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(DB), port=PORT), autocommit=True) as a:
            a.execute("SELECT ruvector_audit_flush()")
            written = a.execute(
                "SELECT operation FROM ruvector.tenant_audit_log WHERE tenant_id = 'sb-a' ORDER BY id"
            ).fetchall()
            ops = [r[0] for r in written]
            assert "insert" in ops and "refused:insert" in ops, ops
