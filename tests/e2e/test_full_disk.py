"""A full disk under a tenant table and its ruhnsw index (a small tmpfs tablespace): inserts
and an index build fail cleanly with SQLSTATE 53100, the server keeps serving, nothing
committed is lost, quotas equal the table, the index checks clean, and once there is room
again the same statements succeed."""

import os
import subprocess

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_full_disk"
DIMS = 64
SMALL, LARGE = "3M", "64M"


def remount(path, size):
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True)


@pytest.fixture
def tablespace():
    path = os.environ["RUVECTOR_PG15_DATA"] + "-tablespace"
    subprocess.run(["mkdir", "-p", path], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SMALL},mode=0700", "tmpfs", path], check=True)
    subprocess.run(["chown", "postgres:postgres", path], check=True)
    try:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute("DROP TABLESPACE IF EXISTS small")
            c.execute(f"CREATE TABLESPACE small LOCATION '{path}'")
        su = fresh_database(DB)
        su.execute("SELECT ruvector_tenant_create('fd', '{\"max_vectors\": 1000000, \"max_qps\": 0}')")
        su.close()
        yield path
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
            c.execute("DROP TABLESPACE IF EXISTS small")
        subprocess.run(["umount", path], check=False)
        subprocess.run(["rmdir", path], check=False)


def connect(tenant):
    c = psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(DB)), autocommit=True)
    register_vector(c)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def state(c):
    """What must hold after a failure: rows, usage, and a clean index."""
    rows = c.execute("SELECT count(*) FROM docs").fetchone()[0]
    usage = c.execute("SELECT current_vectors FROM ruvector.my_tenant_stats").fetchone()[0]
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute("SET ruvector.tenant_id = '*'")
        failed = su.execute("SELECT i.indexrelid::regclass::text, c.\"check\", c.detail FROM pg_index i "
                            "JOIN pg_class r ON r.oid = i.indexrelid JOIN pg_am a ON a.oid = r.relam, "
                            "LATERAL ruvector_index_check(i.indexrelid::regclass) c "
                            "WHERE a.amname = 'ruhnsw' AND NOT c.ok").fetchall()
        invalid = su.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid").fetchall()
    return rows, usage, failed, invalid


def test_inserts_and_an_index_build_on_a_full_disk_fail_cleanly_and_recover(tablespace):
    rng = np.random.default_rng(5)
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute(f"""CREATE TABLE docs (
                           id bigserial,
                           tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'),
                           vec vector({DIMS}),
                           PRIMARY KEY (tenant_id, id)) TABLESPACE small""")
        su.execute("SELECT ruvector_enable_tenant_rls('docs')")
        su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_l2_ops) TABLESPACE small")

    with connect("fd") as c:
        committed, refused = 0, None
        for _ in range(1000):
            batch = rng.standard_normal((100, DIMS)).astype(np.float32)
            try:
                c.cursor().executemany("INSERT INTO docs (vec) VALUES (%s)", [(v,) for v in batch])
            except psycopg.Error as e:
                refused = e
                break
            # executemany in autocommit: every row its own transaction; count them all.
            committed += len(batch)
        assert refused is not None, "the tablespace filled up"
        assert refused.sqlstate == "53100", refused
        # The rows of the batch before the failing row committed one by one.
        rows, usage, failed, invalid = state(c)
        assert rows >= committed and rows < committed + 100
        assert usage == rows, "the refused insert left no quota behind"
        assert not failed and not invalid, (failed, invalid)
        assert c.execute("SELECT 1").fetchone()[0] == 1, "the session still works"

        # An index build on the full disk fails cleanly too.
        with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
            su.execute("SET ruvector.tenant_id = '*'")
            with pytest.raises(psycopg.Error) as e:
                su.execute("CREATE INDEX docs_vec_ip ON docs USING ruhnsw (vec vector_ip_ops) TABLESPACE small")
            assert e.value.sqlstate == "53100", e.value
        assert state(c)[2:] == ([], []), "no broken or invalid index left behind"

        # Room again: the same statements succeed, and the index finds the exact neighbours.
        remount(tablespace, LARGE)
        c.cursor().executemany("INSERT INTO docs (vec) VALUES (%s)",
                               [(v,) for v in rng.standard_normal((100, DIMS)).astype(np.float32)])
        with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
            su.execute("SET ruvector.tenant_id = '*'")
            su.execute("CREATE INDEX docs_vec_ip ON docs USING ruhnsw (vec vector_ip_ops) TABLESPACE small")
        rows, usage, failed, invalid = state(c)
        assert usage == rows and not failed and not invalid, (rows, usage, failed, invalid)
        q = rng.standard_normal(DIMS).astype(np.float32)
        got = c.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 10", (q,)).fetchall()
        c.execute("SET enable_indexscan = off")
        exact = c.execute("SELECT id FROM docs ORDER BY vec <-> %s LIMIT 10", (q,)).fetchall()
        overlap = len({r[0] for r in got} & {r[0] for r in exact})
        assert len(got) == 10 and overlap >= 8, f"recall@10 {overlap / 10}"
