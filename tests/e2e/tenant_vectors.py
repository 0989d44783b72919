"""Tenants with embedding-like vectors in one shared ruhnsw index, for the tenant-confined
search tests: a database with one tenant table, tenants of given sizes whose vectors are drawn
from shared topics (tenants overlap in the space, as real ones do), and the helpers that
search it and compare with exact answers."""

import re

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from tenancy_fixtures import admin_dsn, dsn, fresh_database

DIMS = 32
TOPICS = 40
# Tenants searched exactly at the default exact_threshold (-1: when reading a tenant whole costs
# no more than its graph search at ef_search 40): up to 1,009 vectors of 32 dimensions.
EXACT_THRESHOLD = 1000


def embeddings(n, rng, topics):
    """Points around some of the shared topics in a 12-d latent space, mapped to DIMS."""
    space = np.random.default_rng(77)
    proj = space.standard_normal((12, DIMS)) / np.sqrt(12)
    centres = space.standard_normal((TOPICS, 12)) * 2.0
    z = centres[rng.choice(topics, size=n)] + rng.standard_normal((n, 12)) * 0.6
    return (z @ proj + rng.standard_normal((n, DIMS)) * 0.02).astype(np.float32)


def tenant_topics(t):
    """Tenant number `t` draws from 6 of the 40 topics; neighbouring tenants share some."""
    return [(3 * t + k) % TOPICS for k in range(6)]


def cosine_top(data, ids, q, k):
    d = 1 - (data @ q) / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    return ids[np.argsort(d, kind="stable")[:k]].tolist()


def vec_literal(v):
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


def copy_rows(c, rows, table="docs"):
    """COPY (id, tenant, vector) rows into `table` in binary (the caller sets the tenant)."""
    with c.cursor().copy(f"COPY {table} (id, tenant_id, vec) FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.set_types(["int8", "text", "vector"])
        for row in rows:
            cp.write_row(row)


def build(db, sizes, seed):
    """Database `db` with tenants t0, t1, ... of `sizes` rows in a tenant table `docs`
    indexed by the specification's DDL; returns {tenant: (ids, vectors)}."""
    rng = np.random.default_rng(seed)
    rows, next_id = {}, 1
    for t, n in enumerate(sizes):
        ids = np.arange(next_id, next_id + n)
        rows[f"t{t}"] = (ids, embeddings(n, rng, tenant_topics(t)))
        next_id += n
    with fresh_database(db) as c:
        register_vector(c)
        c.execute(
            "SELECT count(ruvector_tenant_create('t' || n, '{\"max_vectors\": 1000000, \"max_qps\": 0}')) "
            "FROM generate_series(0, %s) n",
            (len(sizes) - 1,),
        )
        c.execute(f"CREATE TABLE docs (id bigint PRIMARY KEY, tenant_id text NOT NULL, vec vector({DIMS}))")
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("GRANT SELECT, INSERT, DELETE ON docs TO ruvector_user")
        c.execute("SET ruvector.tenant_id = '*'")
        copy_rows(c, ((int(i), t, v) for t, (ids, vecs) in rows.items() for i, v in zip(ids, vecs)))
        c.execute("SET maintenance_work_mem = '512MB'")
        # The specification's DDL, verbatim.
        c.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_cosine_ops)")
        c.execute("ANALYZE docs")
    return rows


def superuser(db):
    c = psycopg.connect(admin_dsn(db), autocommit=True)
    register_vector(c)
    return c


def app(db, tenant):
    """A connection of the application role (no BYPASSRLS) with `tenant` as its context."""
    c = psycopg.connect(dsn("rv_app", db), autocommit=True)
    register_vector(c)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    c.execute("SET enable_seqscan = off")
    return c


def search(c, q, k=10, extra=""):
    return c.execute(
        f"SELECT id, tenant_id FROM docs {extra} ORDER BY vec <=> %s LIMIT {k}", (q,)
    ).fetchall()


def index_buffers(c, q):
    """Shared buffers the search of `c`'s tenant touched (hits + reads), from EXPLAIN ANALYZE,
    which is for administrators: run by a superuser session under the same tenant context
    (the index confines the search to that tenant, whoever runs it)."""
    tenant = c.execute("SHOW ruvector.tenant_id").fetchone()[0]
    with psycopg.connect(admin_dsn(c.info.dbname), autocommit=True) as su:
        register_vector(su)
        su.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
        plan = su.execute(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT id FROM docs ORDER BY vec <=> %s LIMIT 10",
            (q,),
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "Index Scan using docs_vec" in text, text
    m = re.search(r"Buffers: shared( hit=(\d+))?( read=(\d+))?", text)
    return int(m.group(2) or 0) + int(m.group(4) or 0)


def check_ok(c, index):
    """ruvector_index_check's rows by name, asserting every check but reachability passed."""
    rows = c.execute("SELECT \"check\", ok, detail FROM ruvector_index_check(%s)", (index,)).fetchall()
    assert all(ok for name, ok, _ in rows if name != "reachability"), rows
    return {name: detail for name, _, detail in rows}
