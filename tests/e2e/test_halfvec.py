"""The halfvec type as an application uses it through pgvector-python (binary COPY of
HalfVector values, queries with a vector or a halfvec): 3,072-dimension columns index at the
default m = 16 under every operator class and come back in exact order; recall is that of a
vector index on the same data; a tenant table with a halfvec column keeps every tenant's
search, insert and delete to its own rows. (pgvector's own halfvec tests and
pgvector-python's run in scripts/test as well.)"""

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import HalfVector, register_vector

from tenancy_fixtures import dsn, fresh_database
from tenant_vectors import superuser
from test_ruhnsw import embeddings, exact_top
from test_ruhnsw_half import index_scan, metapage, ordered_search

DB = "ruvector_halfvec"

HALF_OPS = {
    "halfvec_l2_ops": "<->",
    "halfvec_cosine_ops": "<=>",
    "halfvec_ip_ops": "<#>",
    "halfvec_l1_ops": "<+>",
}


@pytest.fixture(scope="module")
def db():
    fresh_database(DB).close()


def halves(data):
    """The values a halfvec column holds: each element rounded to the nearest half."""
    return data.astype(np.float16).astype(np.float32)


def load_half(c, table, data, tenants=None):
    cols = "id bigint PRIMARY KEY, tenant_id text NOT NULL, " if tenants is not None else "id bigint PRIMARY KEY, "
    c.execute(f"CREATE TABLE {table} ({cols}v halfvec({data.shape[1]}))")
    names = ["id", "tenant_id", "v"] if tenants is not None else ["id", "v"]
    with c.cursor().copy(f"COPY {table} ({', '.join(names)}) FROM STDIN WITH (FORMAT BINARY)") as cp:
        cp.set_types(["int8", "text", "halfvec"] if tenants is not None else ["int8", "halfvec"])
        for i, v in enumerate(data):
            row = (i, tenants[i], HalfVector(v)) if tenants is not None else (i, HalfVector(v))
            cp.write_row(row)


def check_ok(c, index):
    rows = {name: ok for name, ok, _ in c.execute('SELECT "check", ok, detail FROM ruvector_index_check(%s)', (index,))}
    assert all(rows.values()), rows


def test_3072_dimensions_index_at_the_default_m_under_every_operator_class(db):
    n, nq, dims = 1500, 20, 3072
    vectors = embeddings(n + nq, dims, seed=31)
    data, queries = halves(vectors[:n]), vectors[n:]
    ids = np.arange(n)
    with superuser(DB) as c:
        c.execute("DROP TABLE IF EXISTS half_wide")
        load_half(c, "half_wide", data)
        # The values came back as written, rounded to halves.
        got = c.execute("SELECT v FROM half_wide WHERE id = 7").fetchone()[0]
        assert isinstance(got, HalfVector) and np.array_equal(got.to_numpy().astype(np.float32), data[7])
        c.execute("SET enable_seqscan = off")
        for opclass, op in HALF_OPS.items():
            # pgvector's statement, verbatim: no option, USING hnsw.
            c.execute(f"CREATE INDEX half_wide_idx ON half_wide USING hnsw (v {opclass}) WITH (exact_threshold = 0)")
            assert f"format 5, {dims} dimensions (half precision), m 16" in metapage(c, "half_wide_idx")
            c.execute("ANALYZE half_wide")
            index_scan(c, "half_wide", op, queries[0])
            hits = 0
            for q in queries:
                # A vector query (pgvector-python's Vector): cast to halfvec, rows in exact order.
                got = ordered_search(c, "half_wide", q, op, 10)
                assert len(got) == 10
                hits += len(set(got) & exact_top(data, ids, halves(q), op, 10))
            assert hits / (10 * nq) >= 0.95, f"{opclass}: recall@10 {hits / (10 * nq):.3f}"
            check_ok(c, "half_wide_idx")
            c.execute("DROP INDEX half_wide_idx")
        c.execute("DROP TABLE half_wide")


def test_recall_is_that_of_a_vector_index_on_the_same_data(db):
    """The same embeddings in a vector and a halfvec column, one index each at default
    settings: recall@10 against each column's exact answer within 0.02 (the benchmark
    report has the side-by-side figure)."""
    n, nq, dims = 8000, 100, 384
    vectors = embeddings(n + nq, dims, seed=37)
    data, queries = vectors[:n], vectors[n:]
    ids = np.arange(n)
    with superuser(DB) as c:
        c.execute("DROP TABLE IF EXISTS pair")
        c.execute(f"CREATE TABLE pair (id bigint PRIMARY KEY, f vector({dims}), h halfvec({dims}))")
        with c.cursor().copy("COPY pair (id, f, h) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "vector", "halfvec"])
            for i, v in enumerate(data):
                cp.write_row((i, v, HalfVector(v)))
        c.execute("CREATE INDEX pair_f ON pair USING ruhnsw (f vector_cosine_ops)")
        c.execute("CREATE INDEX pair_h ON pair USING ruhnsw (h halfvec_cosine_ops)")
        assert "(half precision)" in metapage(c, "pair_h")
        c.execute("ANALYZE pair")
        c.execute("SET enable_seqscan = off")
        recall = {}
        for col, exact_data in (("f", data), ("h", halves(data))):
            hits = 0
            for q in queries:
                got = [r[0] for r in c.execute(f"SELECT id FROM pair ORDER BY {col} <=> %s LIMIT 10", (q,))]
                hits += len(set(got) & exact_top(exact_data, ids, halves(q) if col == "h" else q, "<=>", 10))
            recall[col] = hits / (10 * nq)
        assert recall["f"] >= 0.95 and recall["h"] >= recall["f"] - 0.02, recall
        c.execute("DROP TABLE pair")


def test_a_tenant_table_with_a_halfvec_column_keeps_each_tenant_to_its_rows(db):
    dims = 256
    a, b = halves(embeddings(2500, dims, seed=41)), halves(embeddings(300, dims, seed=42))
    data = np.concatenate([a, b])
    tenants = ["ha"] * len(a) + ["hb"] * len(b)
    with superuser(DB) as c:
        for t in ("ha", "hb"):
            c.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}') "
                      "WHERE NOT EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = %s)", (t, t))
        c.execute("DROP TABLE IF EXISTS half_docs")
        c.execute("SET ruvector.tenant_id = '*'")
        load_half(c, "half_docs", data, tenants)
        c.execute("SELECT ruvector_enable_tenant_rls('half_docs')")
        c.execute("GRANT SELECT, INSERT, DELETE ON half_docs TO ruvector_user")
        # One column named: the index is keyed by tenant (its second column added).
        c.execute("CREATE INDEX half_docs_idx ON half_docs USING ruhnsw (v halfvec_l2_ops)")
        keys = c.execute("SELECT indnkeyatts FROM pg_index WHERE indexrelid = 'half_docs_idx'::regclass").fetchone()[0]
        assert keys == 2
        c.execute("ANALYZE half_docs")
    a_ids, b_ids = np.arange(len(a)), np.arange(len(a), len(data))
    rng = np.random.default_rng(43)
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as app:
        register_vector(app)
        app.execute("SET enable_seqscan = off")
        hits, queries = 0, rng.standard_normal((6, dims)).astype(np.float32)
        for q in queries:
            # The small tenant: its exact top 10, from its own rows only.
            app.execute("SET ruvector.tenant_id = 'hb'")
            got = ordered_search(app, "half_docs", HalfVector(q), "<->", 10)
            assert set(got) == exact_top(b, b_ids, halves(q), "<->", 10)
            # The large one, through its graph: only its rows.
            app.execute("SET ruvector.tenant_id = 'ha'")
            got = ordered_search(app, "half_docs", q, "<->", 10)
            assert set(got) <= set(a_ids.tolist()) and len(got) == 10
            hits += len(set(got) & exact_top(a, a_ids, halves(q), "<->", 10))
        assert hits >= 0.95 * 10 * len(queries), hits
        # Writes are confined too: a row for another tenant is refused; deletes see only
        # the tenant's rows.
        app.execute("SET ruvector.tenant_id = 'hb'")
        with pytest.raises(psycopg.Error) as e:
            app.execute("INSERT INTO half_docs (id, tenant_id, v) VALUES (99999, 'ha', %s)", (HalfVector(a[0]),))
        assert e.value.sqlstate == "42501", e.value.sqlstate
        app.execute("INSERT INTO half_docs (id, tenant_id, v) VALUES (99999, 'hb', %s)", (HalfVector(a[0]),))
        nearest = app.execute("SELECT id FROM half_docs ORDER BY v <-> %s LIMIT 1", (HalfVector(a[0]),)).fetchone()[0]
        assert nearest == 99999
        deleted = app.execute("DELETE FROM half_docs WHERE v = %s", (HalfVector(a[0]),)).rowcount
        assert deleted == 1
        app.execute("SET ruvector.tenant_id = 'ha'")
        assert app.execute("SELECT id FROM half_docs ORDER BY v <-> %s LIMIT 1", (HalfVector(a[0]),)).fetchone()[0] == 0
    with superuser(DB) as c:
        check_ok(c, "half_docs_idx")
        c.execute("DROP TABLE half_docs")
