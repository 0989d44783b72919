"""The ruhnsw index end to end: recall for every operator class, deletes and VACUUM, builds
larger than maintenance_work_mem, parallel builds (at default settings, with more workers,
cancelled), progress reporting, concurrent writers and readers, a kill -9 of the server during
inserts, and a streaming standby replaying the index."""

import re
import threading
import time

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from cluster_control import kill_9_server, standby, start_server, wait_for_replay
from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_hnsw"
OPS = {
    "vector_l2_ops": "<->",
    "vector_cosine_ops": "<=>",
    "vector_ip_ops": "<#>",
    "vector_l1_ops": "<+>",
}


def embeddings(n, dims, seed, latent=12, topics=40):
    """Embedding-like vectors: points around shared topics in a low-dimensional latent
    space, mapped into `dims` dimensions (real embeddings have a low intrinsic dimension;
    isotropic noise in 1536 dimensions would be a different, unrealistic problem)."""
    space = np.random.default_rng(1234 + dims)  # the same topics and map for every call
    proj = space.standard_normal((latent, dims)) / np.sqrt(latent)
    centres = space.standard_normal((topics, latent)) * 2.0
    rng = np.random.default_rng(seed)
    z = centres[rng.integers(topics, size=n)] + rng.standard_normal((n, latent)) * 0.6
    return (z @ proj + rng.standard_normal((n, dims)) * 0.02).astype(np.float32)


def exact_top(data, ids, q, op, k):
    if op == "<->":
        d = ((data - q) ** 2).sum(axis=1)
    elif op == "<=>":
        d = 1 - (data @ q) / (np.linalg.norm(data, axis=1) * np.linalg.norm(q))
    elif op == "<#>":
        d = -(data @ q)
    else:
        d = np.abs(data - q).sum(axis=1)
    return set(ids[np.argsort(d, kind="stable")[:k]].tolist())


def connect(**kw):
    c = psycopg.connect(admin_dsn(DB), autocommit=True, **kw)
    register_vector(c)
    return c


@pytest.fixture(scope="module")
def db():
    fresh_database(DB).close()
    yield


def load(c, table, data, first_id=0):
    c.execute(f"CREATE TABLE IF NOT EXISTS {table} (id bigint PRIMARY KEY, v vector({data.shape[1]}))")
    with c.cursor().copy(f"COPY {table} (id, v) FROM STDIN WITH (FORMAT BINARY)") as copy:
        copy.set_types(["int8", "vector"])
        for i, v in enumerate(data):
            copy.write_row((first_id + i, v))


def recall(c, table, data, ids, queries, op, k=10):
    hits = rows = 0
    for q in queries:
        got = [r[0] for r in c.execute(f"SELECT id FROM {table} ORDER BY v {op} %s LIMIT {k}", (q,))]
        rows += len(got)
        hits += len(set(got) & exact_top(data, ids, q, op, k))
    assert rows == k * len(queries), "k rows for every query"
    return hits / (k * len(queries))


def check_ok(c, index):
    rows = c.execute("SELECT \"check\", ok, detail FROM ruvector_index_check(%s)", (index,)).fetchall()
    structural = {name: (ok, detail) for name, ok, detail in rows if name != "reachability"}
    assert all(ok for ok, _ in structural.values()), rows
    return {name: detail for name, _, detail in rows}


@pytest.mark.parametrize("n,dims,nq", [(20_000, 128, 100), (10_000, 1536, 50)])
def test_recall_at_10_for_every_operator_class(db, n, dims, nq):
    table = f"items_{dims}"
    all_vectors = embeddings(n + nq, dims, seed=dims)
    data, queries = all_vectors[:n], all_vectors[n:]
    ids = np.arange(n)
    with connect() as c:
        c.execute(f"DROP TABLE IF EXISTS {table}")
        load(c, table, data)
        c.execute("SET maintenance_work_mem = '512MB'")
        for opclass, op in OPS.items():
            c.execute(f"CREATE INDEX {table}_idx ON {table} USING ruhnsw (v {opclass})")
            c.execute("ANALYZE " + table)
            plan = "\n".join(r[0] for r in c.execute(f"EXPLAIN SELECT id FROM {table} ORDER BY v {op} %s LIMIT 10", (queries[0],)))
            assert f"Index Scan using {table}_idx" in plan, plan
            r = recall(c, table, data, ids, queries, op)
            assert r >= 0.95, f"{opclass} on {n} x {dims}: recall@10 {r:.3f}"
            check_ok(c, f"{table}_idx")
            c.execute(f"DROP INDEX {table}_idx")
        c.execute(f"DROP TABLE {table}")


def test_every_operator_class_reaches_every_row_of_small_non_negative_vectors(db):
    """pgvector's recall-test data: 10,000 x vector(3), each element a product of two
    uniforms. Built by inner product alone, 63% of such an index was unreachable."""
    rng = np.random.default_rng(3)
    shape = (10_050, 3)
    all_vectors = (rng.random(shape) * rng.random(shape)).astype(np.float32)
    data, queries = all_vectors[:10_000], all_vectors[10_000:]
    ids = np.arange(len(data))
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS small_products")
        load(c, "small_products", data)
        for opclass, op in OPS.items():
            c.execute(f"CREATE INDEX small_products_idx ON small_products USING ruhnsw (v {opclass})")
            rows = {name: (ok, detail) for name, ok, detail in c.execute(
                "SELECT \"check\", ok, detail FROM ruvector_index_check('small_products_idx')")}
            assert all(ok for ok, _ in rows.values()), (opclass, rows)
            assert rows["reachability"][1].startswith("10000 of 10000 "), (opclass, rows["reachability"])
            r = recall(c, "small_products", data, ids, queries, op, k=20)
            assert r >= 0.99, f"{opclass}: recall@20 {r:.4f}"
            c.execute("DROP INDEX small_products_idx")
        c.execute("DROP TABLE small_products")


def test_recall_after_deleting_30_percent_vacuum_and_reinserting(db):
    n, dims = 20_000, 128
    vectors = embeddings(n + 6_000 + 100, dims, seed=77)
    data, extra, queries = vectors[:n], vectors[n:n + 6_000], vectors[n + 6_000:]
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS churn")
        load(c, "churn", data)
        c.execute("CREATE INDEX churn_idx ON churn USING ruhnsw (v vector_cosine_ops)")
        c.execute("DELETE FROM churn WHERE id % 10 < 3")
        c.execute("VACUUM churn")
        details = check_ok(c, "churn_idx")
        assert details["nodes"] == "14000 live, 6000 deleted", details
        assert "0 to deleted nodes" in details["links"], details
        keep = np.arange(n) % 10 >= 3
        r = recall(c, "churn", data[keep], np.arange(n)[keep], queries, "<=>")
        assert r >= 0.95, f"after deleting 30%: {r:.3f}"
        load(c, "churn", extra, first_id=n)
        all_data = np.vstack([data[keep], extra])
        all_ids = np.concatenate([np.arange(n)[keep], np.arange(n, n + 6_000)])
        r = recall(c, "churn", all_data, all_ids, queries, "<=>")
        assert r >= 0.95, f"after reinserting: {r:.3f}"
        check_ok(c, "churn_idx")
        c.execute("DROP TABLE churn")


def test_deleted_vectors_are_zeroed_in_the_index_pages(db):
    with connect() as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        c.execute("DROP TABLE IF EXISTS erase")
        c.execute("CREATE TABLE erase (id int PRIMARY KEY, v vector(4))")
        # A recognizable float pattern per row: 1234.5 + id.
        c.execute("INSERT INTO erase SELECT i, ARRAY[1234.5 + i, 1234.5 + i, 1234.5 + i, 1234.5 + i]::real[]::vector "
                  "FROM generate_series(1, 200) i")
        c.execute("CREATE INDEX erase_idx ON erase USING ruhnsw (v)")

        def pattern_count(ids):
            pages = c.execute("SELECT pg_relation_size('erase_idx') / 8192").fetchone()[0]
            raw = b"".join(bytes(c.execute("SELECT get_raw_page('erase_idx', %s)", (b,)).fetchone()[0])
                           for b in range(pages))
            return sum(raw.count(np.float32(1234.5 + i).tobytes() * 4) for i in ids)

        assert pattern_count(range(1, 101)) == 100
        c.execute("DELETE FROM erase WHERE id <= 100")
        c.execute("VACUUM erase")
        assert pattern_count(range(1, 101)) == 0, "deleted vectors are gone from the index pages"
        assert pattern_count(range(101, 201)) == 100, "live vectors are intact"
        check_ok(c, "erase_idx")


def test_build_larger_than_maintenance_work_mem(db):
    """Serial, and linked in parallel up to maintenance_work_mem (a table's parallel_workers
    option plans workers whatever the memory), then page by page."""
    n, dims = 20_000, 128
    vectors = embeddings(n + 100, dims, seed=5)
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS spill")
        load(c, "spill", vectors[:n])
    for workers, want in [(0, 1), (1, 2)]:
        notices = []
        with connect() as c:
            c.add_notice_handler(lambda d: notices.append(d.message_primary))
            c.execute(f"ALTER TABLE spill SET (parallel_workers = {workers})")
            c.execute("SET maintenance_work_mem = '2MB'")
            assert linking_threads(c, "CREATE INDEX spill_idx ON spill USING ruhnsw (v)") == want
            assert any("maintenance_work_mem" in m for m in notices), notices
            r = recall(c, "spill", vectors[:n], np.arange(n), vectors[n:], "<->")
            assert r >= 0.95, f"recall after a spilled build, {workers} workers: {r:.3f}"
            check_ok(c, "spill_idx")
            c.execute("DROP INDEX spill_idx")
    with connect() as c:
        c.execute("DROP TABLE spill")


def linking_threads(c, sql):
    """Runs `sql` (a CREATE INDEX) and returns how many threads linked its graph: the build's
    DEBUG1 message, 1 when it has none (a serial build)."""
    seen = []
    c.add_notice_handler(lambda d: seen.append(d.message_primary))
    c.execute("SET client_min_messages = debug1")
    try:
        c.execute(sql)
    finally:
        c.execute("RESET client_min_messages")
    found = [m for m in (re.search(r"ruhnsw: linking \d+ nodes with (\d+) threads", x) for x in seen) if m]
    assert len(found) <= 1, seen
    return int(found[0].group(1)) if found else 1


def test_parallel_builds_link_as_well_as_a_serial_one(db):
    """A table over 8 MB gets a parallel build at default settings (max_parallel_maintenance_
    workers 2, maintenance_work_mem 64 MB: one worker, so two threads); more workers when the
    table and the settings ask for them; none when they are off. Every build checks clean and
    finds the same neighbours within 0.01 of recall@10."""
    n, dims = 20_000, 128
    vectors = embeddings(n + 100, dims, seed=21)
    data, queries, ids = vectors[:n], vectors[n:], np.arange(n)
    results = {}
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS par")
        load(c, "par", data)
    for name, settings, want in [
        ("default", [], 2),
        ("serial", ["SET max_parallel_maintenance_workers = 0"], 1),
        ("three workers", ["SET maintenance_work_mem = '256MB'", "SET max_parallel_maintenance_workers = 3",
                           "ALTER TABLE par SET (parallel_workers = 3)"], 4),
    ]:
        with connect() as c:
            for sql in settings:
                c.execute(sql)
            threads = linking_threads(c, "CREATE INDEX par_idx ON par USING ruhnsw (v vector_cosine_ops)")
            assert threads == want, f"{name}: {threads} threads"
            check_ok(c, "par_idx")
            results[name] = recall(c, "par", data, ids, queries, "<=>")
            c.execute("DROP INDEX par_idx")
            c.execute("ALTER TABLE par RESET (parallel_workers)")
    assert all(r >= 0.95 for r in results.values()), results
    assert results["default"] >= results["serial"] - 0.01, results
    assert results["three workers"] >= results["serial"] - 0.01, results
    with connect() as c:
        c.execute("DROP TABLE par")


def test_cancelling_a_parallel_build(db):
    """A cancel while the threads link stops the build within a moment, leaves no index, and
    the session builds it afterwards."""
    n, dims = 30_000, 128
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS cancel_par")
        load(c, "cancel_par", embeddings(n, dims, seed=22))
    with connect() as builder, connect() as watcher:
        pid = builder.info.backend_pid
        builder.execute("SET maintenance_work_mem = '256MB'")
        builder.execute("ALTER TABLE cancel_par SET (parallel_workers = 2)")
        outcome = {}

        def build():
            try:
                builder.execute("CREATE INDEX cancel_par_idx ON cancel_par USING ruhnsw (v)")
                outcome["done"] = True
            except psycopg.errors.QueryCanceled as e:
                outcome["cancelled"] = time.monotonic()
                outcome["sqlstate"] = e.sqlstate

        t = threading.Thread(target=build)
        t.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and t.is_alive():
            row = watcher.execute(
                "SELECT phase, tuples_done FROM pg_stat_progress_create_index WHERE pid = %s", (pid,)).fetchone()
            if row and row[0] == "building index: linking the graph" and row[1] > 0:
                break
            time.sleep(0.005)
        else:
            pytest.fail(f"the build never reported linking: {outcome}")
        asked = time.monotonic()
        assert watcher.execute("SELECT pg_cancel_backend(%s)", (pid,)).fetchone()[0]
        t.join(60)
        assert outcome.get("sqlstate") == "57014", outcome
        assert outcome["cancelled"] - asked < 5, "the threads stop after their current node"
        assert watcher.execute("SELECT to_regclass('cancel_par_idx')").fetchone()[0] is None
        builder.execute("CREATE INDEX cancel_par_idx ON cancel_par USING ruhnsw (v)")
        check_ok(builder, "cancel_par_idx")
        builder.execute("DROP TABLE cancel_par")


def test_create_index_reports_progress(db):
    n, dims = 30_000, 128
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS progress")
        load(c, "progress", embeddings(n, dims, seed=9))
        c.execute("ANALYZE progress")
    seen = []
    done = threading.Event()

    def build():
        try:
            with connect() as c:
                c.execute("CREATE INDEX progress_idx ON progress USING ruhnsw (v)")
        finally:
            done.set()

    t = threading.Thread(target=build)
    t.start()
    with connect() as watcher:
        while not done.is_set():
            seen += watcher.execute(
                "SELECT phase, tuples_total, tuples_done FROM pg_stat_progress_create_index "
                "WHERE relid = 'progress'::regclass").fetchall()
            time.sleep(0.01)
    t.join()
    loading = [(total, done_) for phase, total, done_ in seen if phase == "building index: loading tuples"]
    assert loading, seen[:5]
    assert any(0 < d < n for _, d in loading), "tuples_done advances while loading"
    assert all(total == n for total, _ in loading), "tuples_total is the table's row estimate"
    # Over 8 MB, so linked in parallel at default settings.
    linking = [(total, done_) for phase, total, done_ in seen if phase == "building index: linking the graph"]
    assert any(0 < d < n for _, d in linking), "tuples_done advances while linking"
    assert all(total == n for total, _ in linking), "tuples_total is the number of nodes"


def test_concurrent_writers_and_readers(db):
    dims = 32
    base = embeddings(3_000, dims, seed=11)
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS busy")
        load(c, "busy", base)
        c.execute("CREATE INDEX busy_idx ON busy USING ruhnsw (v)")
    errors, written = [], []
    stop = time.monotonic() + 4

    def writer(w):
        vs = embeddings(100_000, dims, seed=100 + w)
        with connect() as c:
            i = 0
            while time.monotonic() < stop:
                try:
                    c.execute("INSERT INTO busy VALUES (%s, %s)", (1_000_000 * (w + 1) + i, vs[i % len(vs)]))
                    written.append(1)
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))
                    return
                i += 1

    def reader(r):
        qs = embeddings(10_000, dims, seed=200 + r)
        with connect() as c:
            i = 0
            while time.monotonic() < stop:
                try:
                    rows = c.execute("SELECT id FROM busy ORDER BY v <-> %s LIMIT 10", (qs[i % len(qs)],)).fetchall()
                    if len(rows) != 10:
                        errors.append(f"{len(rows)} rows")
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    return
                i += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
    threads += [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]
    assert len(written) > 100
    with connect() as c:
        check_ok(c, "busy_idx")
        rows = c.execute("SELECT id, v FROM busy").fetchall()
        ids = np.array([r[0] for r in rows])
        data = np.array([r[1] for r in rows], dtype=np.float32)
        r = recall(c, "busy", data, ids, embeddings(50, dims, seed=300), "<->")
        assert r >= 0.95, f"recall after concurrent inserts: {r:.3f}"


def test_kill_9_during_concurrent_inserts(db):
    dims = 32
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS crash")
        load(c, "crash", embeddings(2_000, dims, seed=21))
        c.execute("CREATE INDEX crash_idx ON crash USING ruhnsw (v)")
    committed = [[] for _ in range(4)]

    def writer(w):
        vs = embeddings(50_000, dims, seed=400 + w)
        try:
            with connect() as c:
                for i in range(50_000):
                    rid = 1_000_000 * (w + 1) + i
                    c.execute("INSERT INTO crash VALUES (%s, %s)", (rid, vs[i]))
                    committed[w].append((rid, vs[i]))
        except psycopg.Error:
            pass  # the server went away

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    kill_9_server()
    for t in threads:
        t.join()
    start_server()
    rows = [r for w in committed for r in w]
    assert len(rows) > 50, "inserts were running when the server was killed"
    with connect() as c:
        check_ok(c, "crash_idx")
        present = {r[0] for r in c.execute("SELECT id FROM crash WHERE id >= 1000000")}
        assert {rid for rid, _ in rows} <= present, "every committed row survived"
        # Every committed row is found by the index: its own vector's nearest neighbour.
        sample = rows[:: max(1, len(rows) // 200)]
        found = sum(
            c.execute("SELECT id FROM crash ORDER BY v <-> %s LIMIT 1", (v,)).fetchone()[0] == rid
            for rid, v in sample)
        assert found >= 0.98 * len(sample), f"{found} of {len(sample)} committed rows found"
        c.execute("INSERT INTO crash VALUES (-1, %s)", (np.ones(dims, dtype=np.float32),))
        assert c.execute("SELECT id FROM crash ORDER BY v <-> %s LIMIT 1",
                         (np.ones(dims, dtype=np.float32),)).fetchone()[0] == -1


def test_streaming_standby_replays_the_index(db):
    port = 28820
    dims = 32
    with connect() as c:
        c.execute("DROP TABLE IF EXISTS replicated")
        load(c, "replicated", embeddings(5_000, dims, seed=31))
        c.execute("CREATE INDEX replicated_idx ON replicated USING ruhnsw (v vector_cosine_ops)")
        with standby(c, "standby", port):
            # Changes after the base backup reach the standby only as WAL: inserts (GenericXLog
            # records), deletes and the VACUUM that repairs links and zeroes vectors.
            load(c, "replicated", embeddings(3_000, dims, seed=32), first_id=5_000)
            c.execute("DELETE FROM replicated WHERE id % 4 = 0")
            c.execute("VACUUM replicated")
            lsn = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
            queries = embeddings(30, dims, seed=33)
            expected = [[r[0] for r in c.execute("SELECT id FROM replicated ORDER BY v <=> %s LIMIT 10", (q,))]
                        for q in queries]
            sdsn = psycopg.conninfo.make_conninfo(admin_dsn(DB), port=port)
            with psycopg.connect(sdsn, autocommit=True) as s:
                register_vector(s)
                wait_for_replay(s, lsn)
                plan = "\n".join(r[0] for r in s.execute("EXPLAIN SELECT id FROM replicated ORDER BY v <=> %s LIMIT 10", (queries[0],)))
                assert "Index Scan using replicated_idx" in plan, plan
                got = [[r[0] for r in s.execute("SELECT id FROM replicated ORDER BY v <=> %s LIMIT 10", (q,))]
                       for q in queries]
                assert got == expected, "the standby answers exactly as the primary"
                assert all(len(g) == 10 for g in got)
                rows = s.execute("SELECT \"check\", ok FROM ruvector_index_check('replicated_idx')").fetchall()
                assert all(ok for name, ok in rows if name != "reachability"), rows
