"""Tenant-confined search in a shared ruhnsw index: the specification's DDL builds a
tenant-keyed index; every search reads only the current tenant's graph, with full recall and
k rows whenever the tenant has k rows, for tenants of very different sizes whose embeddings
share topics; the index confines searches by itself even with row-level security off;
'*' merges all tenants for administrators; another tenant's inserts (committed or not) and
deletes change neither a tenant's results nor the pages its query reads; one generic
prepared statement serves tenants of every size through the index."""

import re

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tenancy_fixtures import admin_dsn, dsn, fresh_database

DB = "ruvector_hnsw_tenants"
DIMS = 32
TENANTS = 30
# Zipf-like sizes from 6,000 down to a handful of rows.
SIZES = [max(3, int(6000 / (i + 1) ** 1.6)) for i in range(TENANTS)]
TOPICS = 40
EXACT_THRESHOLD = 1000  # the reloption's default


def embeddings(n, rng, topics):
    """Points around some of the shared topics in a 12-d latent space, mapped to DIMS."""
    space = np.random.default_rng(77)
    proj = space.standard_normal((12, DIMS)) / np.sqrt(12)
    centres = space.standard_normal((TOPICS, 12)) * 2.0
    z = centres[rng.choice(topics, size=n)] + rng.standard_normal((n, 12)) * 0.6
    return (z @ proj + rng.standard_normal((n, DIMS)) * 0.02).astype(np.float32)


def tenant_topics(t):
    # Each tenant draws from 6 of the 40 topics; neighbouring tenants share some.
    return [(3 * t + k) % TOPICS for k in range(6)]


def cosine_top(data, ids, q, k):
    d = 1 - (data @ q) / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    return ids[np.argsort(d, kind="stable")[:k]].tolist()


def vec_literal(v):
    return "[" + ",".join(f"{x:.6f}" for x in v) + "]"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(5)
    rows, next_id = {}, 1
    for t, n in enumerate(SIZES):
        vecs = embeddings(n, rng, tenant_topics(t))
        ids = np.arange(next_id, next_id + n)
        rows[f"t{t}"] = (ids, vecs)
        next_id += n
    with fresh_database(DB) as c:
        for t in rows:
            c.execute("SELECT ruvector_tenant_create(%s, %s)", (t, '{"max_vectors": 1000000, "max_qps": 0}'))
        c.execute(f"CREATE TABLE docs (id bigint PRIMARY KEY, tenant_id text NOT NULL, vec vector({DIMS}))")
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("GRANT SELECT, INSERT, DELETE ON docs TO ruvector_user")
        c.execute("SET ruvector.tenant_id = '*'")
        with c.cursor().copy("COPY docs (id, tenant_id, vec) FROM STDIN") as cp:
            for t, (ids, vecs) in rows.items():
                for i, v in zip(ids, vecs):
                    cp.write_row((int(i), t, vec_literal(v)))
        # The specification's DDL, verbatim.
        c.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_cosine_ops)")
        c.execute("ANALYZE docs")
    return rows


def superuser():
    c = psycopg.connect(admin_dsn(DB), autocommit=True)
    register_vector(c)
    return c


def app(tenant):
    c = psycopg.connect(dsn("rv_app", DB), autocommit=True)
    register_vector(c)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    c.execute("SET enable_seqscan = off")
    return c


def search(c, q, k=10, extra=""):
    return c.execute(
        f"SELECT id, tenant_id FROM docs {extra} ORDER BY vec <=> %s LIMIT {k}", (q,)
    ).fetchall()


def index_buffers(c, q):
    """Shared buffers the search's plan touched (hits + reads), from EXPLAIN ANALYZE."""
    plan = c.execute(
        "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) SELECT id FROM docs ORDER BY vec <=> %s LIMIT 10",
        (q,),
    ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "Index Scan using docs_vec" in text, text
    m = re.search(r"Buffers: shared( hit=(\d+))?( read=(\d+))?", text)
    return int(m.group(2) or 0) + int(m.group(4) or 0)


def check_ok(c, index):
    rows = c.execute("SELECT \"check\", ok, detail FROM ruvector_index_check(%s)", (index,)).fetchall()
    assert all(ok for name, ok, _ in rows if name != "reachability"), rows
    return {name: detail for name, _, detail in rows}


def test_the_spec_ddl_builds_a_tenant_keyed_index(data):
    with superuser() as c:
        cols = c.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indexrelid "
            "WHERE i.indexrelid = 'docs_vec'::regclass ORDER BY a.attnum"
        ).fetchall()
        assert [r[0] for r in cols] == ["vec", "tenant_id"]
        detail = check_ok(c, "docs_vec")
        assert detail["directory"].startswith(f"{TENANTS} tenants"), detail
        # The explicit form works too; a table without tenancy keeps a one-column index.
        c.execute("CREATE TABLE plain (id int, vec vector(3))")
        c.execute("CREATE INDEX plain_vec ON plain USING ruhnsw (vec)")
        assert c.execute("SELECT indnatts FROM pg_index WHERE indexrelid = 'plain_vec'::regclass").fetchone()[0] == 1
        c.execute("CREATE INDEX docs_vec_l2 ON docs USING ruhnsw (vec vector_l2_ops, tenant_id)")
        assert c.execute("SELECT indnatts FROM pg_index WHERE indexrelid = 'docs_vec_l2'::regclass").fetchone()[0] == 2
        check_ok(c, "docs_vec_l2")
        c.execute("DROP INDEX docs_vec_l2")
        c.execute("DROP TABLE plain")


def test_every_tenant_gets_full_recall_and_k_rows(data):
    rng = np.random.default_rng(9)
    worst = 1.0
    for t, (ids, vecs) in data.items():
        tn = int(t[1:])
        queries = embeddings(3, rng, tenant_topics(tn))
        with app(t) as c:
            hits = 0
            for q in queries:
                got = search(c, q)
                assert len(got) == min(10, len(ids)), (t, len(got))
                assert {r[1] for r in got} == {t}, "only the tenant's own rows"
                want = cosine_top(vecs, ids, q, 10)
                hits += len({r[0] for r in got} & set(want))
                if len(ids) <= EXACT_THRESHOLD:
                    assert {r[0] for r in got} == set(want), "small tenants are searched exactly"
            recall = hits / (len(queries) * min(10, len(ids)))
            worst = min(worst, recall)
            assert recall >= 0.95, (t, len(ids), recall)
    assert worst >= 0.95


def test_small_tenants_through_their_graph_when_the_threshold_is_zero(data):
    rng = np.random.default_rng(11)
    with superuser() as su:
        su.execute("ALTER INDEX docs_vec SET (exact_threshold = 0)")
        try:
            for t in ("t5", "t20", "t29"):
                ids, vecs = data[t]
                with app(t) as c:
                    hits = 0
                    for q in embeddings(3, rng, tenant_topics(int(t[1:]))):
                        got = search(c, q)
                        assert len(got) == min(10, len(ids)) and {r[1] for r in got} == {t}
                        hits += len({r[0] for r in got} & set(cosine_top(vecs, ids, q, 10)))
                    assert hits / (3 * min(10, len(ids))) >= 0.9, t
        finally:
            su.execute("ALTER INDEX docs_vec RESET (exact_threshold)")


def test_the_index_confines_searches_without_row_level_security(data):
    q = data["t4"][1][0]
    with superuser() as su:
        su.execute("ALTER TABLE docs DISABLE ROW LEVEL SECURITY")
        try:
            with app("t4") as c:
                got = search(c, q)
                assert len(got) == 10 and {r[1] for r in got} == {"t4"}
                # A condition naming another tenant finds nothing, even without RLS.
                assert search(c, q, extra="WHERE tenant_id = 't5'") == []
                assert len(search(c, q, extra="WHERE tenant_id = 't4'")) == 10
        finally:
            su.execute("ALTER TABLE docs ENABLE ROW LEVEL SECURITY")


def test_no_tenant_context_is_refused(data):
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as c:
        register_vector(c)
        with pytest.raises(psycopg.Error) as e:
            search(c, data["t0"][1][0])
        assert e.value.sqlstate == "28000"


def test_administrators_search_all_tenants_merged(data):
    all_ids = np.concatenate([ids for ids, _ in data.values()])
    all_vecs = np.concatenate([v for _, v in data.values()])
    rng = np.random.default_rng(13)
    with superuser() as c:
        c.execute("SET ruvector.tenant_id = '*'")
        c.execute("SET enable_seqscan = off")
        hits = 0
        for t in (0, 7, 20):
            q = embeddings(1, rng, tenant_topics(t))[0]
            got = search(c, q)
            assert len(got) == 10
            hits += len({r[0] for r in got} & set(cosine_top(all_vecs, all_ids, q, 10)))
        assert hits / 30 >= 0.9
        got = search(c, data["t3"][1][0], extra="WHERE tenant_id = 't3'")
        assert {r[1] for r in got} == {"t3"}


def test_no_side_channel_from_another_tenants_writes(data):
    a, b = "t12", "t1"  # a small tenant; a large one writing next to its query
    q = data[a][1][0] + 0.001
    with app(a) as c:
        before = (search(c, q), index_buffers(c, q))
        noisy = (np.tile(q, (4000, 1)) + np.random.default_rng(3).standard_normal((4000, DIMS)).astype(np.float32) * 0.01)
        with superuser() as w:
            w.execute("SET ruvector.tenant_id = '*'")
            w.execute("BEGIN")
            with w.cursor().copy("COPY docs (id, tenant_id, vec) FROM STDIN") as cp:
                for i, v in enumerate(noisy):
                    cp.write_row((10_000_000 + i, b, vec_literal(v)))
            assert (search(c, q), index_buffers(c, q)) == before, "uncommitted rows of another tenant"
            w.execute("COMMIT")
            assert (search(c, q), index_buffers(c, q)) == before, "committed rows of another tenant"
            w.execute("DELETE FROM docs WHERE id >= 10000000")
            w.execute("VACUUM docs")
            assert (search(c, q), index_buffers(c, q)) == before, "after the other tenant deleted them"
            check_ok(w, "docs_vec")


def test_deletes_vacuum_and_inserts_keep_tenant_graphs_whole(data):
    t = "t2"
    ids, vecs = data[t]
    with superuser() as w:
        w.execute("SET ruvector.tenant_id = '*'")
        gone = [int(i) for i in ids if i % 10 < 3]
        w.execute("DELETE FROM docs WHERE id = ANY(%s)", (gone,))
        w.execute("VACUUM docs")
        detail = check_ok(w, "docs_vec")
        assert "0 to deleted nodes" in detail["links"], detail
        keep = np.array([i % 10 >= 3 for i in ids])
        rng = np.random.default_rng(17)
        with app(t) as c:
            hits = 0
            for q in embeddings(5, rng, tenant_topics(2)):
                got = search(c, q)
                hits += len({r[0] for r in got} & set(cosine_top(vecs[keep], ids[keep], q, 10)))
            assert hits / 50 >= 0.9
        # Put them back.
        with w.cursor().copy("COPY docs (id, tenant_id, vec) FROM STDIN") as cp:
            for i, v in zip(ids, vecs):
                if i % 10 < 3:
                    cp.write_row((int(i), t, vec_literal(v)))
        check_ok(w, "docs_vec")


def test_one_generic_prepared_statement_serves_tenants_of_every_size(data):
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as c:
        register_vector(c)
        c.execute("SET plan_cache_mode = force_generic_plan")
        c.execute("PREPARE nn(vector) AS SELECT id, tenant_id FROM docs ORDER BY vec <=> $1 LIMIT 10")
        for t in ("t0", "t5", "t15", "t29"):
            ids, vecs = data[t]
            c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (t,))
            arg = f"'{vec_literal(vecs[0])}'"  # EXECUTE takes no bind parameters
            plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN EXECUTE nn({arg})").fetchall())
            assert "Index Scan using docs_vec" in plan, (t, plan)
            got = c.execute(f"EXECUTE nn({arg})").fetchall()
            assert len(got) == min(10, len(ids)) and {r[1] for r in got} == {t}
            assert got[0][0] == ids[0], "a row is its own nearest neighbour"
