"""A pgvector application, unchanged, on a server with ruvector and without pgvector:
`CREATE EXTENSION vector`, `USING hnsw` / `USING ivfflat`, and pgvector's settings, run side
by side with pgvector 0.8.2 where pgvector has the same behaviour."""

import random

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, fresh_database

ROWS = 2000  # above ruhnsw's exact_threshold: searches go through the graph


def notices_of(conn):
    got = []
    conn.add_notice_handler(lambda d: got.append((d.severity_nonlocalized, d.message_primary, d.message_hint)))
    return got


def sqlstate(conn, sql, params=None):
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary, e.diag.message_hint
    return None


def test_create_extension_vector_needs_ruvector_and_names_it():
    name = "rv_dropin_ext"
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        c.execute(f"CREATE DATABASE {name}")
    try:
        with psycopg.connect(admin_dsn(name), autocommit=True) as c:
            state, message, _ = sqlstate(c, "CREATE EXTENSION IF NOT EXISTS vector")
            assert (state, message) == ("42704", 'required extension "ruvector" is not installed')
            c.execute("CREATE EXTENSION vector CASCADE")
            c.execute("CREATE EXTENSION IF NOT EXISTS vector")
            rows = c.execute("SELECT extname, extversion FROM pg_extension WHERE extname IN ('vector', 'ruvector') "
                             "ORDER BY extname").fetchall()
            assert rows == [("ruvector", "0.2.0"), ("vector", "0.8.2")]
            assert c.execute("SELECT '[1,2]'::vector <-> '[4,6]'").fetchone()[0] == 5.0
            # Dropping ruvector takes the name with it only when asked to.
            assert sqlstate(c, "DROP EXTENSION ruvector")[0] == "2BP01"
            c.execute("DROP EXTENSION vector")
            c.execute("CREATE EXTENSION vector")
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def fill(conn, table):
    rng = random.Random(7)
    conn.execute(f"DROP TABLE IF EXISTS {table}")
    conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, embedding vector(3))")
    with conn.cursor().copy(f"COPY {table} (embedding) FROM STDIN") as copy:
        for _ in range(ROWS):
            copy.write_row(["[%f,%f,%f]" % (rng.random(), rng.random(), rng.random())])


def index_method(conn, index):
    return conn.execute("SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam "
                        "WHERE c.relname = %s", (index,)).fetchone()[0]


def top(conn, table, op, limit=5, where=""):
    with conn.transaction():
        conn.execute("SET LOCAL enable_seqscan = off")
        sql = f"SELECT id FROM {table} {where} ORDER BY embedding {op} '[0.5,0.2,0.9]' LIMIT {limit}"
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql).fetchall())
        assert "Index Scan" in plan, plan
        return [r[0] for r in conn.execute(sql).fetchall()]


def exact(conn, table, op, limit=5):
    with conn.transaction():
        conn.execute("SET LOCAL enable_indexscan = off")
        return [r[0] for r in conn.execute(
            f"SELECT id FROM {table} ORDER BY embedding {op} '[0.5,0.2,0.9]' LIMIT {limit}").fetchall()]


def test_using_hnsw_builds_a_ruhnsw_index_with_pgvectors_options(ruv_any, pgv):
    for conn in (ruv_any, pgv):
        fill(conn, "dropin_items")
        notices = notices_of(conn)
        conn.execute("CREATE INDEX dropin_hnsw ON dropin_items USING hnsw (embedding vector_l2_ops) "
                     "WITH (m = 16, ef_construction = 64)")
        assert notices == []
    assert index_method(ruv_any, "dropin_hnsw") == "ruhnsw"
    assert index_method(pgv, "dropin_hnsw") == "hnsw"
    want = exact(pgv, "dropin_items", "<->")
    assert exact(ruv_any, "dropin_items", "<->") == want
    assert top(ruv_any, "dropin_items", "<->") == top(pgv, "dropin_items", "<->") == want
    # pgvector's options are checked as pgvector checks them.
    for conn in (ruv_any, pgv):
        state, message, _ = sqlstate(conn, "CREATE INDEX ON dropin_items USING hnsw (embedding) WITH (m = 1)")
        assert state == "22023" and 'value 1 out of bounds for option "m"' in message
        assert sqlstate(conn, "CREATE INDEX ON dropin_items USING hnsw (embedding) WITH (lists = 1)")[0] == "22023"
        conn.execute("DROP TABLE dropin_items")


def test_pgvectors_widest_indexable_column_indexes_at_the_default_m(ruv_any, pgv):
    """pgvector indexes vector(2000) at m = 16; so does ruhnsw (in half precision, the rows
    re-ranked by the table's vectors), with the same statement and the same answers."""
    rng = random.Random(11)
    rows = ["[" + ",".join("%.5f" % rng.gauss(0, 1) for _ in range(2000)) + "]" for _ in range(300)]
    query = "[" + ",".join("%.5f" % rng.gauss(0, 1) for _ in range(2000)) + "]"
    sql = "SELECT id FROM wide_items ORDER BY embedding <-> %s LIMIT 10"
    answers = []
    for conn in (ruv_any, pgv):
        conn.execute("DROP TABLE IF EXISTS wide_items")
        conn.execute("CREATE TABLE wide_items (id bigserial PRIMARY KEY, embedding vector(2000))")
        with conn.cursor().copy("COPY wide_items (embedding) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([r])
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            exact_ids = [r[0] for r in conn.execute(sql, (query,))]
        conn.execute("CREATE INDEX wide_hnsw ON wide_items USING hnsw (embedding vector_l2_ops)")
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + sql, (query,)))
            assert "Index Scan using wide_hnsw" in plan, plan
            answers.append(([r[0] for r in conn.execute(sql, (query,))], exact_ids))
        conn.execute("DROP TABLE wide_items")
    (ours, ours_exact), (theirs, theirs_exact) = answers
    assert ours_exact == theirs_exact
    assert ours == ours_exact  # 300 rows of 2,000 dimensions: cheaper to read whole, answered exactly
    assert len(set(theirs) & set(theirs_exact)) >= 9


def test_using_ivfflat_builds_a_ruhnsw_index_and_says_so(ruv_any, pgv):
    fill(ruv_any, "dropin_ivf")
    fill(pgv, "dropin_ivf")
    notices = notices_of(ruv_any)
    ruv_any.execute("CREATE INDEX dropin_ivf_idx ON dropin_ivf USING ivfflat (embedding vector_cosine_ops) "
                    "WITH (lists = 20)")
    pgv.execute("CREATE INDEX dropin_ivf_idx ON dropin_ivf USING ivfflat (embedding vector_cosine_ops) "
                "WITH (lists = 20)")
    assert [(s, m) for s, m, _ in notices] == [("NOTICE", "ivfflat index built as a ruhnsw index; lists is ignored")]
    assert index_method(ruv_any, "dropin_ivf_idx") == "ruhnsw"
    want = exact(ruv_any, "dropin_ivf", "<=>")
    assert want == exact(pgv, "dropin_ivf", "<=>")
    assert top(ruv_any, "dropin_ivf", "<=>") == want
    # ivfflat's own checks still hold: lists out of range is pgvector's error there, ours here
    # never sees lists at all (no IVF lists to size).
    ruv_any.execute("DROP TABLE dropin_ivf")
    pgv.execute("DROP TABLE dropin_ivf")


@pytest.mark.parametrize("opclass,op", [("bit_hamming_ops", "<~>"), ("bit_jaccard_ops", "<%>")])
def test_bit_string_indexes_search_like_pgvectors(ruv_any, pgv, opclass, op):
    """pgvector's binary quantization: an index on binary_quantize(embedding)::bit(n), searched
    with the bit distance operators."""
    rng = random.Random(11)
    rows = ["[" + ",".join("%.3f" % rng.gauss(0, 1) for _ in range(64)) + "]" for _ in range(ROWS)]
    query = "[" + ",".join("%.3f" % rng.gauss(0, 1) for _ in range(64)) + "]"
    key = "(binary_quantize(embedding)::bit(64))"
    order = f"ORDER BY {key} {op} binary_quantize('{query}'::vector) LIMIT 10"
    got = {}
    for name, conn in (("ruvector", ruv_any), ("pgvector", pgv)):
        conn.execute("DROP TABLE IF EXISTS dropin_bits")
        conn.execute("CREATE TABLE dropin_bits (id bigserial PRIMARY KEY, embedding vector(64))")
        with conn.cursor().copy("COPY dropin_bits (embedding) FROM STDIN") as copy:
            for r in rows:
                copy.write_row([r])
        conn.execute(f"CREATE INDEX dropin_bits_idx ON dropin_bits USING hnsw ({key} {opclass})")
        with conn.transaction():
            conn.execute("SET LOCAL enable_indexscan = off")
            exact = [r[0] for r in conn.execute(f"SELECT {key} {op} binary_quantize('{query}'::vector) "
                                                f"FROM dropin_bits {order}").fetchall()]
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN SELECT id FROM dropin_bits {order}").fetchall())
            assert "Index Scan using dropin_bits_idx" in plan, plan
            found = [r[0] for r in conn.execute(f"SELECT {key} {op} binary_quantize('{query}'::vector) "
                                                f"FROM dropin_bits {order}").fetchall()]
        got[name] = (exact, found)
        conn.execute("DROP TABLE dropin_bits")
    exact, found = got["ruvector"]
    assert exact == got["pgvector"][0]
    # Ten rows in distance order, each as close as the tenth exact one (distances tie often).
    assert len(found) == 10 and found == sorted(found) and all(d <= exact[-1] for d in found)


def test_a_bit_index_is_a_ruhnsw_index_of_the_bits(ruv):
    ruv.execute("DROP TABLE IF EXISTS dropin_bitcol")
    ruv.execute("CREATE TABLE dropin_bitcol (id int PRIMARY KEY, b bit(4))")
    ruv.execute("INSERT INTO dropin_bitcol VALUES (1, B'1100'), (2, B'0011'), (3, B'1110'), (4, NULL)")
    ruv.execute("CREATE INDEX dropin_bitcol_idx ON dropin_bitcol USING ruhnsw (b bit_hamming_ops)")
    assert index_method(ruv, "dropin_bitcol_idx") == "ruhnsw"
    with ruv.transaction():
        ruv.execute("SET LOCAL enable_seqscan = off")
        rows = ruv.execute("SELECT id, b <~> B'1000' FROM dropin_bitcol ORDER BY b <~> B'1000' LIMIT 5").fetchall()
        assert rows == [(1, 1.0), (3, 2.0), (2, 3.0)]
        state, message, _ = sqlstate(ruv, "SELECT id FROM dropin_bitcol ORDER BY b <~> B'10' LIMIT 5")
        assert state == "22000", message
    with ruv.transaction():
        # A huge search argument is refused before its elements are allocated.
        ruv.execute("SET LOCAL enable_seqscan = off")
        state, message, _ = sqlstate(
            ruv, "SELECT id FROM dropin_bitcol ORDER BY b <~> repeat('1', 10000000)::varbit::bit(10000000) LIMIT 5")
        assert (state, message) == ("54000", "bit strings of 10000000 bits cannot be indexed (at most 64000)")
    ruv.execute("DROP TABLE dropin_bitcol")


def test_hnsw_settings_steer_ruhnsw_like_pgvectors_index(ruv_any, pgv):
    """hnsw.ef_search and hnsw.iterative_scan, as a pgvector application sets them, have
    pgvector's meaning: with iterative scans off a search returns at most ef_search rows."""
    for conn in (ruv_any, pgv):
        fill(conn, "dropin_set")
        conn.execute("CREATE INDEX ON dropin_set USING hnsw (embedding vector_l2_ops)")
    counts = {}
    for name, conn in (("ruvector", ruv_any), ("pgvector", pgv)):
        notices = notices_of(conn)
        conn.execute("SET hnsw.iterative_scan = off")
        conn.execute("SET hnsw.ef_search = 3")
        limited = len(top(conn, "dropin_set", "<->", limit=10))
        conn.execute("SET hnsw.ef_search = 100")
        full = len(top(conn, "dropin_set", "<->", limit=10))
        with conn.transaction():
            conn.execute("SET LOCAL hnsw.ef_search = 2")
            local = len(top(conn, "dropin_set", "<->", limit=10))
        after_local = len(top(conn, "dropin_set", "<->", limit=10))
        conn.execute("RESET hnsw.ef_search")
        conn.execute("RESET hnsw.iterative_scan")
        counts[name] = (limited, full, local, after_local)
        assert notices == [], name
    assert counts["ruvector"] == counts["pgvector"] == (3, 10, 2, 10)
    for conn in (ruv_any, pgv):
        conn.execute("DROP TABLE dropin_set")


def test_hnsw_max_scan_tuples_bounds_a_filtered_scan(ruv_any):
    fill(ruv_any, "dropin_filter")
    ruv_any.execute("CREATE INDEX ON dropin_filter USING hnsw (embedding vector_l2_ops)")
    where = "WHERE id % 50 = 0"
    ruv_any.execute("SET hnsw.iterative_scan = relaxed_order")
    assert len(top(ruv_any, "dropin_filter", "<->", limit=10, where=where)) == 10
    ruv_any.execute("SET hnsw.max_scan_tuples = 1")  # the first round (ef_search) only
    ruv_any.execute("SET hnsw.ef_search = 40")
    bounded = len(top(ruv_any, "dropin_filter", "<->", limit=10, where=where))
    assert bounded < 10
    ruv_any.execute("SET hnsw.iterative_scan = off")
    assert len(top(ruv_any, "dropin_filter", "<->", limit=10, where=where)) == bounded
    ruv_any.execute("RESET ALL")
    assert len(top(ruv_any, "dropin_filter", "<->", limit=10, where=where)) == 10
    ruv_any.execute("DROP TABLE dropin_filter")


@pytest.mark.parametrize("sql", [
    "SET hnsw.ef_search = 0", "SET hnsw.ef_search = 1001", "SET hnsw.ef_search = 'many'",
    "SET hnsw.iterative_scan = sideways", "SET hnsw.max_scan_tuples = 0",
    "SET hnsw.scan_mem_multiplier = 0.5", "SET ivfflat.probes = 0", "SET ivfflat.max_probes = 32769",
    "SET ivfflat.iterative_scan = strict_order", "SELECT set_config('hnsw.ef_search', '5000', false)",
    "SET hnsw.bogus = 1", "SET LOCAL hnsw.ef_search = -1",
])
def test_pgvector_settings_refuse_what_pgvector_refuses(ruv_any, pgv, sql):
    pgv.execute("SELECT '[1]'::vector")  # loads pgvector's library, which defines its settings
    want = sqlstate(pgv, sql)
    assert want is not None and want[0] in ("22023", "42602"), want
    assert sqlstate(ruv_any, sql) == want


def test_pgvector_settings_show_like_pgvectors(ruv_any, pgv):
    pgv.execute("SELECT '[1]'::vector")
    names = ["hnsw.ef_search", "hnsw.max_scan_tuples", "hnsw.scan_mem_multiplier",
             "ivfflat.probes", "ivfflat.iterative_scan", "ivfflat.max_probes"]
    for name in names:
        assert ruv_any.execute(f"SHOW {name}").fetchone() == pgv.execute(f"SHOW {name}").fetchone(), name
    # The one documented difference: iterative scans are on by default.
    assert pgv.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "off"
    assert ruv_any.execute("SHOW hnsw.iterative_scan").fetchone()[0] == "relaxed_order"


def test_pgvector_names_are_ruvectors_settings(ruv):
    """hnsw.ef_search and ruvector.ef_search are one setting: the last SET of either wins."""
    ruv.execute("SET ruvector.ef_search = 7")
    assert ruv.execute("SHOW hnsw.ef_search").fetchone()[0] == "7"
    ruv.execute("SET hnsw.ef_search = 9")
    assert ruv.execute("SHOW ruvector.ef_search").fetchone()[0] == "9"
    with ruv.transaction():
        ruv.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        assert ruv.execute("SHOW ruvector.iterative_scan").fetchone()[0] == "strict_order"
    assert ruv.execute("SHOW ruvector.iterative_scan").fetchone()[0] == "relaxed_order"
    ruv.execute("RESET ALL")
    assert ruv.execute("SHOW hnsw.ef_search").fetchone()[0] == "40"


@pytest.mark.parametrize("options,want", [
    ("-c hnsw.ef_search=5", "5"),          # pgvector's name, given before any statement
    ("-c ruvector.ef_search=6", "6"),      # ruvector's name: defining pgvector's keeps it
])
def test_settings_given_at_connection_are_kept(options, want):
    with psycopg.connect(admin_dsn("ruvector_test"), autocommit=True, options=options) as c:
        assert c.execute("SHOW hnsw.ef_search").fetchone()[0] == want
        assert c.execute("SHOW ruvector.ef_search").fetchone()[0] == want


def test_settings_without_a_meaning_here_warn(ruv):
    notices = notices_of(ruv)
    ruv.execute("SET hnsw.ef_search = 100")
    ruv.execute("SET hnsw.scan_mem_multiplier = 2")
    ruv.execute("SET ivfflat.probes = 4")
    ruv.execute("SET ruvector.ef_search = 100")
    assert notices == [
        ("WARNING", "ivfflat.probes has no effect: an ivfflat index is a ruhnsw index here",
         "ruvector.ef_search sets its search width."),
    ]


def test_pgvector_settings_in_a_database_without_ruvector_warn():
    with psycopg.connect(admin_dsn("postgres"), autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM pg_extension WHERE extname = 'ruvector'").fetchone()[0] == 0
        notices = notices_of(c)
        c.execute("SET hnsw.ef_search = 100")
        assert notices == [("WARNING", "hnsw.ef_search has no effect: pgvector is not loaded",
                            "ruvector's ruhnsw index reads ruvector.ef_search.")]


def test_bit_varying_and_too_long_bit_strings_are_refused_like_pgvector(ruv_any, pgv):
    for sql in ["CREATE INDEX ON dropin_varbit USING hnsw (val bit_hamming_ops)",
                "CREATE INDEX ON dropin_varbit USING hnsw ((val::bit(64001)) bit_hamming_ops)"]:
        outcomes = []
        for conn in (ruv_any, pgv):
            conn.execute("DROP TABLE IF EXISTS dropin_varbit")
            conn.execute("CREATE TABLE dropin_varbit (val varbit(3))")
            try:
                conn.execute(sql)
                outcomes.append(None)
            except psycopg.Error as e:
                outcomes.append(e.diag.message_primary)
            conn.execute("DROP TABLE dropin_varbit")
        assert outcomes[0] == outcomes[1] is not None, sql


def test_using_hnsw_on_a_tenant_table_is_keyed_by_tenant():
    with fresh_database("rv_dropin_tenants") as c:
        c.execute("SELECT ruvector_tenant_create('a')")
        c.execute("SELECT ruvector_tenant_create('b')")
        c.execute("CREATE TABLE docs (id bigserial, tenant_id text NOT NULL "
                  "DEFAULT current_setting('ruvector.tenant_id'), embedding vector(2), PRIMARY KEY (tenant_id, id))")
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("CREATE INDEX docs_hnsw ON docs USING hnsw (embedding vector_l2_ops)")
        keys = c.execute("SELECT i.indnkeyatts, am.amname FROM pg_index i JOIN pg_class x ON x.oid = i.indexrelid "
                         "JOIN pg_am am ON am.oid = x.relam WHERE x.relname = 'docs_hnsw'").fetchone()
        assert keys == (2, "ruhnsw")
        c.execute("SET ruvector.tenant_id = 'a'")
        c.execute("INSERT INTO docs (embedding) VALUES ('[1,0]'), ('[0,1]')")
        c.execute("SET ruvector.tenant_id = 'b'")
        c.execute("INSERT INTO docs (embedding) VALUES ('[1,1]')")
        rows = c.execute("SELECT embedding::text FROM docs ORDER BY embedding <-> '[1,0]' LIMIT 5").fetchall()
        assert rows == [("[1,1]",)]
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute("DROP DATABASE IF EXISTS rv_dropin_tenants WITH (FORCE)")
