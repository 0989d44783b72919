"""Half-precision storage in ruhnsw pages: pgvector-sized embeddings (2,000 and 3,072
dimensions) index at the default m = 16 with no option; rows come back in the exact order of
the table's full-precision vectors (the executor re-ranks them), for every operator class,
with filters that make the scan continue, under a tenant context and beside large norms;
recall stays within a hair of full-precision storage; values half precision cannot hold are
refused; the choice is recorded in the metapage."""

import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tenancy_fixtures import dsn, fresh_database
from tenant_vectors import superuser
from test_pgvector_dropin import sqlstate
from test_ruhnsw import OPS, embeddings, exact_top, load

DB = "ruvector_hnsw_half"


def connect():
    return superuser(DB)


@pytest.fixture(scope="module")
def db():
    fresh_database(DB).close()


def operator(data, q, op):
    """The distance operator's value for every row, in float64 (as PostgreSQL returns it)."""
    data, q = data.astype(np.float64), q.astype(np.float64)
    if op == "<->":
        return np.sqrt(((data - q) ** 2).sum(axis=1))
    if op == "<=>":
        return 1 - (data @ q) / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    if op == "<#>":
        return -(data @ q)
    return np.abs(data - q).sum(axis=1)


def ordered_search(c, table, q, op, k, where="", ordered=True):
    rows = c.execute(
        f"SELECT id, v {op} %s FROM {table} {where} ORDER BY v {op} %s LIMIT {k}", (q, q)
    ).fetchall()
    dists = [d for _, d in rows]
    if ordered:
        assert dists == sorted(dists), f"{op}: rows out of distance order: {dists[:20]}"
    return [i for i, _ in rows]


def metapage(c, index):
    return c.execute(
        "SELECT detail FROM ruvector_index_check(%s) WHERE \"check\" = 'metapage'", (index,)
    ).fetchone()[0]


def each_graph_index(c, table, data):
    """Loads `data` into `table` and yields (operator class, operator) with an index of that
    class searched through its graph (exact_threshold 0) and the planner held to it; drops
    the table afterwards."""
    c.execute("SET enable_seqscan = off")
    c.execute(f"DROP TABLE IF EXISTS {table}")
    load(c, table, data)
    for opclass, op in OPS.items():
        c.execute(f"CREATE INDEX {table}_idx ON {table} USING ruhnsw (v {opclass}) WITH (exact_threshold = 0)")
        c.execute(f"ANALYZE {table}")
        index_scan(c, table, op, data[0])
        yield opclass, op
        c.execute(f"DROP INDEX {table}_idx")
    c.execute(f"DROP TABLE {table}")


def index_scan(c, table, op, q):
    plan = [r[0] for r in c.execute(f"EXPLAIN (COSTS OFF) SELECT id FROM {table} ORDER BY v {op} %s LIMIT 10", (q,))]
    assert any(f"Index Scan using {table}_idx" in line for line in plan), [line[:80] for line in plan]


@pytest.mark.parametrize("dims", [2000, 3072])
def test_pgvector_sized_embeddings_index_at_the_default_m_and_come_back_in_exact_order(db, dims):
    n, nq = 2500, 20
    vectors = embeddings(n + nq, dims, seed=dims)
    data, queries = vectors[:n], vectors[n:]
    ids = np.arange(n)
    table = f"wide_{dims}"
    with connect() as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        load(c, table, data)
        c.execute("SET maintenance_work_mem = '512MB'")
        for opclass, op in OPS.items():
            # No option: pgvector's statement, verbatim but for the access method's name.
            c.execute(f"CREATE INDEX {table}_idx ON {table} USING ruhnsw (v {opclass})")
            assert f"format 5, {dims} dimensions (half precision), m 16" in metapage(c, f"{table}_idx")
            c.execute(f"ANALYZE {table}")
            index_scan(c, table, op, queries[0])
            hits = 0
            for q in queries:
                got = ordered_search(c, table, q, op, 10)
                assert len(got) == 10
                hits += len(set(got) & exact_top(data, ids, q, op, 10))
            assert hits / (10 * nq) >= 0.95, f"{opclass} at {dims} dimensions: recall@10 {hits / (10 * nq):.3f}"
            rows = {name: ok for name, ok, _ in c.execute("SELECT \"check\", ok, detail FROM ruvector_index_check(%s)", (f"{table}_idx",))}
            assert all(rows.values()), rows
            c.execute(f"DROP INDEX {table}_idx")
        c.execute(f"DROP TABLE {table}")


def test_half_precision_recall_is_within_a_hair_of_full_precision(db):
    """The same graph (the build links by the full-precision vectors either way), searched
    with 2-byte elements: recall@10 at the default ef_search within 0.01 of 4-byte elements,
    and the first row (the nearest) identical."""
    n, nq, dims = 8000, 100, 384
    vectors = embeddings(n + nq, dims, seed=11)
    data, queries = vectors[:n], vectors[n:]
    ids = np.arange(n)
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS precision")
        load(c, "precision", data)
        c.execute("SET maintenance_work_mem = '512MB'")
        recalls = {}
        for storage in ("full", "half"):
            c.execute(f"CREATE INDEX precision_idx ON precision USING ruhnsw (v vector_cosine_ops) WITH (storage = {storage})")
            assert f"({storage} precision)" in metapage(c, "precision_idx")
            c.execute("ANALYZE precision")
            index_scan(c, "precision", "<=>", queries[0])
            hits, firsts = 0, []
            for q in queries:
                got = ordered_search(c, "precision", q, "<=>", 10)
                hits += len(set(got) & exact_top(data, ids, q, "<=>", 10))
                firsts.append(got[0])
            recalls[storage] = (hits / (10 * nq), firsts)
            c.execute("DROP INDEX precision_idx")
        (full, full_first), (half, half_first) = recalls["full"], recalls["half"]
        assert full >= 0.95 and half >= full - 0.01, f"recall@10 full {full:.4f}, half {half:.4f}"
        assert sum(a == b for a, b in zip(full_first, half_first)) >= nq - 2
        c.execute("DROP TABLE precision")


def test_a_small_table_is_answered_exactly_and_iterative_scans_stay_ordered(db):
    """A table cheaper to read whole than to search through its graph (at the default
    exact_threshold, 300 rows of 2,048 dimensions are) is read whole: re-ranked, its top k is
    the exact top k. With a filter that rejects most rows, the scan continues round after round and
    every row it returns is still in order and passes the filter."""
    dims = 2048
    rng = np.random.default_rng(5)
    small = rng.standard_normal((300, dims)).astype(np.float32)
    large = embeddings(3000, dims, seed=99)
    with connect() as c:
        c.execute("SET enable_seqscan = off")  # a table this small is otherwise read sequentially
        for table, data in (("exact_small", small), ("filtered", large)):
            c.execute(f"DROP TABLE IF EXISTS {table}")
            load(c, table, data)
            c.execute(f"CREATE INDEX {table}_idx ON {table} USING ruhnsw (v)")
            c.execute(f"ANALYZE {table}")
        ids = np.arange(len(small))
        for q in rng.standard_normal((10, dims)).astype(np.float32):
            index_scan(c, "exact_small", "<->", q)
            want = ids[np.argsort(operator(small, q, "<->"), kind="stable")[:10]].tolist()
            assert ordered_search(c, "exact_small", q, "<->", 10) == want
        for q in embeddings(5, dims, seed=100):
            got = ordered_search(c, "filtered", q, "<->", 10, where="WHERE id %% 20 = 3")
            assert len(got) == 10 and all(i % 20 == 3 for i in got), got
        c.execute("DROP TABLE exact_small, filtered")


def test_large_norms_and_extreme_values_keep_the_order_and_stay_below_the_exact_distance(db):
    """Inner product of long vectors (norms in the thousands), values near the largest
    half-precision number, and tiny values that round to subnormals: the bound each row is
    reported with must stay below its exact distance, or PostgreSQL stops the query ("index
    returned tuples in wrong order"); under strict order the rows come in exact order."""
    dims = 2100
    rng = np.random.default_rng(17)
    scales = np.concatenate([np.full(300, 1e-6), np.full(300, 1.0), np.full(300, 1000.0), np.full(100, 60000.0)])
    data = (rng.uniform(-1, 1, (len(scales), dims)) * scales[:, None]).astype(np.float32)
    with connect() as c:
        for _, op in each_graph_index(c, "extremes", data):
            for q in data[rng.choice(len(data), 12, replace=False)]:
                # Where rounding dwarfs the gaps between distances (values of 1,000 keep
                # three digits), the re-ranking needs several rounds of the scan; a later
                # round may bring a row closer than one returned before (relaxed order).
                # Under strict order, rows come in exact order.
                c.execute("SET ruvector.iterative_scan = relaxed_order")
                got = ordered_search(c, "extremes", q, op, 50, ordered=False)
                assert len(got) == 50
                c.execute("SET ruvector.iterative_scan = strict_order")
                ordered_search(c, "extremes", q, op, 50)


def test_values_half_precision_cannot_hold_are_refused_unless_the_index_normalises(db):
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS big_values")
        c.execute("CREATE TABLE big_values (id int, v vector(2500))")
        c.execute("CREATE INDEX big_l2 ON big_values USING ruhnsw (v)")
        state, message, _ = sqlstate(c, "INSERT INTO big_values VALUES (1, array_fill(1e5::real, ARRAY[2500])::vector)")
        assert state == "22003", message
        assert "out of range for a ruhnsw index that stores half-precision elements" in message
        c.execute("DROP INDEX big_l2")
        # A cosine index stores unit vectors: any value fits whose vector's length is finite
        # in single precision.
        c.execute("CREATE INDEX big_cos ON big_values USING ruhnsw (v vector_cosine_ops)")
        c.execute("INSERT INTO big_values VALUES (1, array_fill(1e5::real, ARRAY[2500])::vector)")
        c.execute("INSERT INTO big_values VALUES (2, array_fill(-3e15::real, ARRAY[2500])::vector)")
        state, message, _ = sqlstate(c, "INSERT INTO big_values VALUES (3, array_fill(1e20::real, ARRAY[2500])::vector)")
        assert state == "22003", message
        c.execute("SET enable_seqscan = off")
        got = c.execute("SELECT id FROM big_values ORDER BY v <=> array_fill(1::real, ARRAY[2500])::vector LIMIT 2").fetchall()
        assert [r[0] for r in got] == [1, 2]
        c.execute("DROP TABLE big_values")


def test_tenant_confined_search_over_wide_vectors(db):
    """The tenant-keyed index of the specification's DDL over 3,072 dimensions: each tenant's
    search returns its own rows only, in exact order, the exact top k for a small tenant."""
    dims = 3072
    rng = np.random.default_rng(23)
    a, b = embeddings(1500, dims, seed=1), embeddings(200, dims, seed=2)
    with connect() as c:
        for t in ("wa", "wb"):
            c.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}') WHERE NOT EXISTS (SELECT 1 FROM ruvector.tenants WHERE id = %s)", (t, t))
        c.execute("DROP TABLE IF EXISTS wide_docs")
        c.execute(f"CREATE TABLE wide_docs (id bigint PRIMARY KEY, tenant_id text NOT NULL, v vector({dims}))")
        c.execute("SELECT ruvector_enable_tenant_rls('wide_docs')")
        c.execute("GRANT SELECT ON wide_docs TO ruvector_user")
        c.execute("SET ruvector.tenant_id = '*'")
        with c.cursor().copy("COPY wide_docs (id, tenant_id, v) FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "text", "vector"])
            for i, v in enumerate(a):
                cp.write_row((i, "wa", v))
            for i, v in enumerate(b):
                cp.write_row((10_000 + i, "wb", v))
        c.execute("CREATE INDEX wide_docs_idx ON wide_docs USING ruhnsw (v vector_cosine_ops)")
        assert "(half precision)" in metapage(c, "wide_docs_idx")
        c.execute("ANALYZE wide_docs")
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as app:
        register_vector(app)
        app.execute("SET enable_seqscan = off")
        b_ids = np.arange(10_000, 10_000 + len(b))
        for q in rng.standard_normal((8, dims)).astype(np.float32):
            app.execute("SET ruvector.tenant_id = 'wb'")
            got = ordered_search(app, "wide_docs", q, "<=>", 10)
            assert got == b_ids[np.argsort(operator(b, q, "<=>"), kind="stable")[:10]].tolist()
            app.execute("SET ruvector.tenant_id = 'wa'")
            got = ordered_search(app, "wide_docs", q, "<=>", 10)
            assert len(got) == 10 and all(i < 10_000 for i in got), got
    # A dedicated index for a tenant takes the shared index's storage.
    with connect() as c:
        c.execute("ALTER INDEX wide_docs_idx SET (storage = half)")
        c.execute("SELECT ruvector_tenant_isolate('wb')")
        deadline = time.monotonic() + 180
        while (row := c.execute("SELECT phase, error FROM ruvector_tenant_migration_status('wb')").fetchone())[0] not in ("done", "failed"):
            assert time.monotonic() < deadline, row
            time.sleep(0.1)
        assert row == ("done", None), row
        index = c.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'wide_docs'::regclass "
                          "AND indpred IS NOT NULL").fetchone()[0]
        assert "storage=half" in c.execute("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE oid = %s::regclass", (index,)).fetchone()[0]
        assert "(half precision)" in metapage(c, index)
    with psycopg.connect(dsn("rv_app", DB), autocommit=True) as app:
        register_vector(app)
        app.execute("SET enable_seqscan = off")
        app.execute("SET ruvector.tenant_id = 'wb'")
        for q in rng.standard_normal((4, dims)).astype(np.float32):
            got = ordered_search(app, "wide_docs", q, "<=>", 10)
            assert got == b_ids[np.argsort(operator(b, q, "<=>"), kind="stable")[:10]].tolist()


def test_queries_single_precision_cannot_scale_and_two_order_keys_never_stop_the_scan(db):
    """A query too short or too long for single precision (its squared length underflows or
    overflows), a row equal to the query, and ORDER BY with a second distance: the bound
    each row is reported with stays below the exact distance (PostgreSQL would stop the
    query otherwise), and rows still come back in order."""
    dims = 2100
    rng = np.random.default_rng(31)
    data = rng.uniform(-1, 1, (400, dims)).astype(np.float32)
    queries = {
        "tiny": np.full(dims, 1e-23, dtype=np.float32),
        "huge": np.full(dims, 1e18, dtype=np.float32),
        "row": data[5],
    }
    with connect() as c:
        for opclass, op in each_graph_index(c, "degenerate", data):
            for name, q in queries.items():
                got = ordered_search(c, "degenerate", q, op, 20, ordered=name == "row")
                assert len(got) == 20, (opclass, name)
            rows = c.execute(
                f"SELECT id FROM degenerate ORDER BY v {op} %s, v {op} %s LIMIT 5", (data[5], data[6])
            ).fetchall()
            assert rows[0][0] == 5 or op in ("<#>",), (opclass, rows)
