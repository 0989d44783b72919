"""Tenant-confined search in a shared ruhnsw index: the specification's DDL builds a
tenant-keyed index; every search reads only the current tenant's graph, with full recall and
k rows whenever the tenant has k rows, for tenants of very different sizes whose embeddings
share topics; the index confines searches by itself even with row-level security off;
'*' merges all tenants for administrators; another tenant's inserts (committed or not) and
deletes change neither a tenant's results nor the pages its query reads; one generic
prepared statement serves tenants of every size through the index."""

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

import tenant_vectors as tv
from tenancy_fixtures import dsn
from tenant_vectors import DIMS, EXACT_THRESHOLD, check_ok, cosine_top, embeddings, search, tenant_topics

DB = "ruvector_hnsw_tenants"
TENANTS = 30
# Zipf-like sizes from 6,000 down to a handful of rows.
SIZES = [max(3, int(6000 / (i + 1) ** 1.6)) for i in range(TENANTS)]


@pytest.fixture(scope="module")
def data():
    return tv.build(DB, SIZES, seed=5)


def superuser():
    return tv.superuser(DB)


def app(tenant):
    return tv.app(DB, tenant)


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
        su.execute("SET ruvector.tenant_id = '*'")  # an administrator's deliberate change
        su.execute("ALTER TABLE docs DISABLE ROW LEVEL SECURITY")
        try:
            with app("t4") as c:
                got = search(c, q)
                assert len(got) == 10 and {r[1] for r in got} == {"t4"}
                # A condition naming another tenant is refused, even without RLS.
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    search(c, q, extra="WHERE tenant_id = 't5'")
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
        before = (search(c, q), tv.index_buffers(c, q))
        noisy = (np.tile(q, (4000, 1)) + np.random.default_rng(3).standard_normal((4000, DIMS)).astype(np.float32) * 0.01)
        with superuser() as w:
            w.execute("SET ruvector.tenant_id = '*'")
            w.execute("BEGIN")
            tv.copy_rows(w, ((10_000_000 + i, b, v) for i, v in enumerate(noisy)))
            assert (search(c, q), tv.index_buffers(c, q)) == before, "uncommitted rows of another tenant"
            w.execute("COMMIT")
            assert (search(c, q), tv.index_buffers(c, q)) == before, "committed rows of another tenant"
            w.execute("DELETE FROM docs WHERE id >= 10000000")
            w.execute("VACUUM docs")
            assert (search(c, q), tv.index_buffers(c, q)) == before, "after the other tenant deleted them"
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
        tv.copy_rows(w, ((int(i), t, v) for i, v in zip(ids, vecs) if i % 10 < 3))
        check_ok(w, "docs_vec")


def test_one_generic_prepared_statement_serves_tenants_of_every_size(data):
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as c:
        register_vector(c)
        c.execute("SET plan_cache_mode = force_generic_plan")
        c.execute("PREPARE nn(vector) AS SELECT id, tenant_id FROM docs ORDER BY vec <=> $1 LIMIT 10")
        for t in ("t0", "t5", "t15", "t29"):
            ids, vecs = data[t]
            c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (t,))
            arg = f"'{tv.vec_literal(vecs[0])}'"  # EXECUTE takes no bind parameters
            plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN EXECUTE nn({arg})").fetchall())
            assert "Index Scan using docs_vec" in plan, (t, plan)
            got = c.execute(f"EXECUTE nn({arg})").fetchall()
            assert len(got) == min(10, len(ids)) and {r[1] for r in got} == {t}
            assert got[0][0] == ids[0], "a row is its own nearest neighbour"


def test_a_sessions_memory_of_the_directory_follows_truncate_and_reindex(data):
    """A backend remembers where each tenant's directory entry is; TRUNCATE (new tenant
    order), REINDEX and DROP/CREATE INDEX from another session must not make it search
    another tenant's graph."""
    rng = np.random.default_rng(19)
    vecs = {t: embeddings(20, rng, tenant_topics(n)) for n, t in enumerate(("t0", "t1", "t2"))}

    def fill(w, order):
        w.execute("TRUNCATE probe")
        for t in order:
            w.cursor().executemany(
                "INSERT INTO probe VALUES (%s, %s, %s)",
                [(100 * int(t[1:]) + i, t, v) for i, v in enumerate(vecs[t])],
            )

    def confined(c, t):
        got = c.execute("SELECT id, tenant_id FROM probe ORDER BY vec <=> %s LIMIT 5", (vecs[t][3],)).fetchall()
        assert {r[1] for r in got} == {t} and got[0][0] == 100 * int(t[1:]) + 3, (t, got)

    with superuser() as w:
        w.execute(f"CREATE TABLE probe (id int PRIMARY KEY, tenant_id text NOT NULL, vec vector({DIMS}))")
        w.execute("SELECT ruvector_enable_tenant_rls('probe')")
        w.execute("GRANT SELECT ON probe TO ruvector_user")
        w.execute("SET ruvector.tenant_id = '*'")
        w.execute("CREATE INDEX probe_vec ON probe USING ruhnsw (vec vector_cosine_ops) WITH (exact_threshold = 0)")
        fill(w, ["t0", "t1", "t2"])
        try:
            with app("t2") as c:
                confined(c, "t2")
                fill(w, ["t2", "t1", "t0"])  # TRUNCATE: t2 is now the first entry
                confined(c, "t2")
                w.execute("REINDEX INDEX probe_vec")
                confined(c, "t2")
                fill(w, ["t1", "t0", "t2"])
                w.execute("DROP INDEX probe_vec")
                w.execute("CREATE INDEX probe_vec ON probe USING ruhnsw (vec vector_cosine_ops) WITH (exact_threshold = 0)")
                confined(c, "t2")
                for t in ("t0", "t1"):
                    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (t,))
                    confined(c, t)
        finally:
            w.execute("DROP TABLE probe")
