"""The search width of large tenant graphs, at default settings: a tenant of 30,000
embedding-like vectors (32 intrinsic dimensions, the hard kind for a graph) searched through
the shared index gets recall@10 >= 0.99 with the default ef_search, because its graph is
searched wider than a small one's (ruvector.scale_ef_search, on by default); with it off, the
same searches lose recall, as a fixed ef_search does on a growing graph. The table is large
enough for a parallel build at default settings, so these graphs were linked by two threads."""

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from tenancy_fixtures import dsn, fresh_database

DB = "ruvector_search_width"
DIMS, LATENT = 64, 32
SIZES = {"large": 30_000, "small": 600}
QUERY = "SELECT id FROM docs ORDER BY vec <=> %s LIMIT 10"
BUILD = {}

SPACE = np.random.default_rng(5)
PROJECTION = SPACE.normal(0, 1 / np.sqrt(LATENT), (LATENT, DIMS))
TOPICS = SPACE.normal(0, 2, (6, LATENT))


def embeddings(n, seed):
    """Points around 6 topics in a LATENT-dimensional space, mapped to DIMS."""
    rng = np.random.default_rng(seed)
    z = TOPICS[rng.integers(0, len(TOPICS), n)] + rng.normal(0, 0.6, (n, LATENT))
    return (z @ PROJECTION + rng.normal(0, 0.02, (n, DIMS))).astype(np.float32)


def app(tenant):
    c = psycopg.connect(dsn("rv_app", DB), autocommit=True)
    register_vector(c)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


@pytest.fixture(scope="module")
def data():
    vectors = {t: embeddings(n, seed=i + 1) for i, (t, n) in enumerate(SIZES.items())}
    with fresh_database(DB) as su:
        register_vector(su)
        su.execute("SET ruvector.tenant_id = '*'")
        su.execute(
            f"CREATE TABLE docs (id bigserial, tenant_id text NOT NULL "
            f"DEFAULT current_setting('ruvector.tenant_id'), vec vector({DIMS}), "
            f"PRIMARY KEY (tenant_id, id))"
        )
        su.execute("SELECT ruvector_enable_tenant_rls('docs')")
        su.execute("GRANT SELECT ON docs TO rv_app")
        for t, rows in vectors.items():
            su.execute("SELECT ruvector_tenant_create(%s, '{\"max_qps\": 0}')", (t,))
            with su.cursor().copy("COPY docs (tenant_id, vec) FROM STDIN WITH (FORMAT BINARY)") as cp:
                cp.set_types(["text", "vector"])
                for v in rows:
                    cp.write_row([t, v])
        notices = []
        su.add_notice_handler(lambda d: notices.append(d.message_primary))
        su.execute("SET client_min_messages = debug1")
        su.execute("CREATE INDEX docs_vec ON docs USING ruhnsw (vec vector_cosine_ops)")
        su.execute("RESET client_min_messages")
        BUILD["notices"] = notices
        BUILD["checks"] = su.execute('SELECT "check", ok, detail FROM ruvector_index_check(\'docs_vec\')').fetchall()
        su.execute("ANALYZE docs")
    return vectors


def recall(c, queries):
    """recall@10 of the index's answers against the exact ones (a sequential scan)."""
    hits = 0
    for q in queries:
        got = [r[0] for r in c.execute(QUERY, (q,), prepare=False)]
        c.execute("SET enable_indexscan = off")
        want = [r[0] for r in c.execute(QUERY, (q,), prepare=False)]
        c.execute("RESET enable_indexscan")
        assert len(got) == len(want) == 10, "no short results"
        hits += len(set(got) & set(want))
    return hits / (10 * len(queries))


def plan(c, q):
    return "\n".join(r[0] for r in c.execute("EXPLAIN " + QUERY, (q,), prepare=False))


def test_the_shared_index_was_linked_in_parallel_and_checks_clean(data):
    """The table is over 8 MB: at default settings PostgreSQL plans one worker for its index
    build, so two threads link the tenants' graphs; links stay within each tenant."""
    assert any(f"linking {sum(SIZES.values())} nodes with 2 threads" in m for m in BUILD["notices"]), BUILD["notices"]
    assert all(ok for check, ok, _ in BUILD["checks"] if check != "reachability"), BUILD["checks"]


def test_a_large_tenant_gets_full_recall_at_default_settings(data):
    queries = embeddings(60, seed=100)
    with app("large") as c:
        assert c.execute("SHOW ruvector.ef_search").fetchone()[0] == "40"
        assert c.execute("SHOW ruvector.scale_ef_search").fetchone()[0] == "on"
        assert "Index Scan using docs_vec" in plan(c, queries[0])
        widened = recall(c, queries)
        assert widened >= 0.99, widened
        c.execute("SET ruvector.scale_ef_search = off")
        fixed = recall(c, queries)
        assert fixed < widened, (fixed, widened)
    with app("small") as c:
        assert recall(c, queries[:10]) == 1.0, "a small tenant is searched exactly"
