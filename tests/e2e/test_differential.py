"""The same vector expressions in pgvector 0.8.2 and in ruvector (PostgreSQL 15 and 18).

Text output and binary send must be byte-identical; distances agree within the rounding of
a float32 sum in a different order (bounded by n * eps * sum of |terms|); arithmetic,
ordering and aggregates agree exactly; refused input gives the same SQLSTATE and message.
"""

import numpy as np
import psycopg
import pytest

EPS32 = float(np.finfo(np.float32).eps)
DIMS = [1, 2, 3, 7, 8, 15, 16, 17, 31, 64, 100, 128, 384, 768, 1536]


def f32_literal(values):
    # repr of the float64 holding a float32 exactly: reads back as the same float32.
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def vectors(seed, count_per_dim=6):
    rng = np.random.default_rng(seed)
    out = []
    for dim in DIMS:
        for k in range(count_per_dim):
            scale = [1.0, 1e-3, 1e3, 1e-30, 1e30, 1.0][k % 6]
            v = (rng.standard_normal(dim) * scale).astype(np.float32)
            if k == 5:
                v = np.round(v * 10).astype(np.float32)  # integers and zeros
            out.append(v)
    return out


def rows(conn, sql, params=()):
    return conn.execute(sql, params).fetchall()


def refusal(conn, expr):
    """(SQLSTATE, message) of `SELECT expr`, or None when it succeeds."""
    try:
        conn.execute(f"SELECT {expr}")
    except psycopg.Error as e:
        return e.sqlstate, e.diag.message_primary
    return None


def test_text_and_binary_io_are_identical(ruv_any, pgv):
    vs = vectors(1)
    lits = [f32_literal(v) for v in vs]
    # Decimal literals with more digits than float32 holds: both must round alike.
    rng = np.random.default_rng(2)
    lits += ["[" + ",".join(f"{x:.17g}" for x in rng.standard_normal(d) * 10.0 ** int(rng.integers(-40, 37))) + "]"
             for d in (1, 3, 16, 300)]
    lits += ["[1e-45,1.4e-45,7e-46,1.17549435e-38]", " [ -0 , +0.0 ,.5,5. ] ", "[1e-50]",
             "[0.0001,0.00001,123456,1234567,1e6,100000.5]", "[3.4028235e38,-3.4028234e38]"]
    sql = ("SELECT v::text, vector_send(v) FROM unnest(%s::text[]) WITH ORDINALITY t(lit, i), "
           "LATERAL (SELECT lit::vector AS v) s ORDER BY i")
    want = rows(pgv, sql, (lits,))
    got = rows(ruv_any, sql, (lits,))
    assert len(got) == len(want) == len(lits)
    for lit, g, w in zip(lits, got, want):
        assert g[0] == w[0], f"text of {lit[:60]}"
        assert bytes(g[1]) == bytes(w[1]), f"binary of {lit[:60]}"


def bound(terms, n):
    return 2 * n * EPS32 * float(np.sum(np.abs(terms))) + 1e-300


def test_distances_agree_within_float_rounding(ruv_any, pgv):
    vs = vectors(3)
    rng = np.random.default_rng(4)
    pairs = []
    for a in vs:
        b = vs[int(rng.integers(len(vs)))]
        if len(b) != len(a):
            b = (rng.standard_normal(len(a)) * np.float32(np.abs(a).max() + 1)).astype(np.float32)
        pairs.append((a, b))
    sql = ("SELECT a::vector <-> b::vector, a::vector <=> b::vector, a::vector <#> b::vector, "
           "a::vector <+> b::vector, inner_product(a::vector, b::vector), vector_norm(a::vector), "
           "vector_l2_squared_distance(a::vector, b::vector) "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(a, b, i) ORDER BY i")
    params = ([f32_literal(a) for a, _ in pairs], [f32_literal(b) for _, b in pairs])
    want = rows(pgv, sql, params)
    got = rows(ruv_any, sql, params)
    for (a, b), g, w in zip(pairs, got, want):
        n = len(a)
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        d = a64 - b64
        l2sq_tol = bound(d * d, n)
        checks = [
            ("l2", g[0], w[0], l2sq_tol / max(w[0], 1e-300) + 1e-300 if w[0] > 0 else np.sqrt(l2sq_tol)),
            ("l2sq", g[6], w[6], l2sq_tol),
            ("neg_ip", g[2], w[2], bound(a64 * b64, n)),
            ("ip", g[4], w[4], bound(a64 * b64, n)),
            ("l1", g[3], w[3], bound(np.abs(d), n)),
            ("norm", g[5], w[5], n * float(np.finfo(np.float64).eps) * w[5] + 1e-300),
        ]
        if w[1] == w[1]:  # cosine is NaN for a zero vector in both
            aa, bb = float(np.sum(a64 * a64)), float(np.sum(b64 * b64))
            cos_tol = 4 * n * EPS32 * float(np.sum(np.abs(a64 * b64))) / np.sqrt(aa * bb) + 1e-15
            checks.append(("cosine", g[1], w[1], cos_tol))
        else:
            assert g[1] != g[1], "cosine distance of a zero vector is NaN in both"
        with np.errstate(over="ignore", invalid="ignore"):
            products = a * b  # float32, as both sum them
        # Terms that overflow to +inf and to -inf: IEEE addition gives NaN in any order, and a
        # build of pgvector that vectorizes with reassociation may give an infinity instead.
        mixed = bool(np.any(products == np.inf) and np.any(products == -np.inf))
        for name, gv, wv, tol in checks:
            if not np.isfinite(wv):  # float32 sums of huge elements overflow in both
                if name in ("neg_ip", "ip") and mixed:
                    assert np.isnan(gv), f"{name} dim={n}: ruvector {gv!r}, the IEEE sum of +inf and -inf terms is NaN"
                    continue
                assert gv == wv or (np.isnan(gv) and np.isnan(wv)), f"{name} dim={n}: ruvector {gv!r} pgvector {wv!r}"
                continue
            assert abs(gv - wv) <= tol, f"{name} dim={n}: ruvector {gv!r} pgvector {wv!r} tol {tol!r}"


def test_arithmetic_ordering_and_aggregates_are_identical(ruv_any, pgv):
    vs = vectors(5)
    rng = np.random.default_rng(6)
    a = [f32_literal(v) for v in vs]
    b = [f32_literal((rng.standard_normal(len(v)) * 3).astype(np.float32)) for v in vs]
    sql = ("SELECT (a::vector + b::vector)::text, (a::vector - b::vector)::text, "
           "vector_cmp(a::vector, b::vector), a::vector < b::vector, a::vector = a::vector, "
           "l2_normalize(a::vector)::text, vector_dims(a::vector) "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(a, b, i) ORDER BY i")
    assert rows(ruv_any, sql, (a, b)) == rows(pgv, sql, (a, b))
    small = [f32_literal((rng.standard_normal(4) * 4).astype(np.float32)) for _ in range(20)]
    mul = ("SELECT (a::vector * b::vector)::text FROM unnest(%s::text[], %s::text[]) "
           "WITH ORDINALITY t(a, b, i) ORDER BY i")
    assert rows(ruv_any, mul, (small, small[::-1])) == rows(pgv, mul, (small, small[::-1]))
    # sum(vector) adds float32 in input order, so the input order is pinned; DISTINCT
    # aggregates go in a query of their own (PostgreSQL 16+ would sort the whole input).
    source = "(SELECT lit::vector AS v FROM unnest(%s::text[]) WITH ORDINALITY t(lit, i) ORDER BY i) s"
    lits = [f32_literal((rng.standard_normal(16) * 100).astype(np.float32)) for _ in range(500)]
    lits += lits[:50]
    for agg in (f"SELECT avg(v)::text, sum(v)::text FROM {source}",
                f"SELECT count(DISTINCT v), count(*) FROM {source}"):
        assert rows(ruv_any, agg, (lits,)) == rows(pgv, agg, (lits,))
    # Negative zeros: sums start from the first row, so -0 stays -0.
    zeros = ["[-0,0,-0]", "[-0,-0,0]"]
    agg = f"SELECT avg(v)::text, sum(v)::text FROM {source}"
    assert rows(ruv_any, agg, (zeros,)) == rows(pgv, agg, (zeros,))
    order = ("SELECT lit FROM unnest(%s::text[]) t(lit) ORDER BY lit::vector, lit")
    mixed = lits[:100] + [f32_literal(v) for v in vectors(8, 2)]
    assert rows(ruv_any, order, (mixed,)) == rows(pgv, order, (mixed,))


def test_concat_subvector_and_binary_quantize_are_identical(ruv_any, pgv):
    vs = vectors(9, 2)
    lits = [f32_literal(v) for v in vs]
    sql = ("SELECT (a::vector || b::vector)::text, binary_quantize(a::vector)::text, "
           "subvector(a::vector, 1, 1)::text, subvector(a::vector, 1, 1000)::text, "
           "subvector(a::vector, vector_dims(a::vector), 3)::text, "
           "subvector(a::vector, 0, 2)::text, subvector(a::vector, -1, 3)::text "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(a, b, i) ORDER BY i")
    assert rows(ruv_any, sql, (lits, lits[::-1])) == rows(pgv, sql, (lits, lits[::-1]))
    # An untyped literal on the right is a vector, not text.
    one = "SELECT '[1,2]'::vector || '[3]', binary_quantize('[0,-0,1e-30,-1,5]'::vector)::text"
    assert rows(ruv_any, one) == rows(pgv, one) == [("[1,2,3]", "00101")]


def test_a_cosine_index_leaves_zero_vectors_out_like_pgvectors(ruv_any, pgv):
    def index_order(conn, am):
        conn.execute("DROP TABLE IF EXISTS zero_cos")
        conn.execute("CREATE TABLE zero_cos (id int PRIMARY KEY, v vector(2))")
        conn.execute("INSERT INTO zero_cos VALUES (1, '[1,0]'), (2, '[0,1]'), (3, '[0,0]'), "
                     "(4, '[1,1]'), (5, '[0,0]'), (6, '[2,1]')")
        conn.execute(f"CREATE INDEX ON zero_cos USING {am} (v vector_cosine_ops)")
        with conn.transaction():
            conn.execute("SET LOCAL enable_seqscan = off")
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM zero_cos ORDER BY v <=> '[1,0.9]' LIMIT 10").fetchall()]
        conn.execute("DROP TABLE zero_cos")
        return ids

    assert index_order(ruv_any, "ruhnsw") == index_order(pgv, "hnsw") == [4, 6, 1, 2]


BAD = [
    "[1,2", "[1,,2]", "[a]", "1,2", "[]", "[ ]", "[1,2] x", "[1,]", "", "[1e]", "[.]",
    "[NaN]", "[1,inf]", "[-Infinity]", "[1e39]", "[1,-3.5e38]", "[" + ",".join(["1"] * 16001) + "]",
]


@pytest.mark.parametrize("lit", BAD, ids=range(len(BAD)))
def test_refused_literals_match(ruv_any, pgv, lit):
    def outcome(conn):
        try:
            conn.execute("SELECT %s::vector", (lit,))
        except psycopg.Error as e:
            return e.sqlstate, e.diag.message_primary, e.diag.message_detail
        return None

    want = outcome(pgv)
    assert want is not None, "pgvector accepted it"
    assert outcome(ruv_any) == want


@pytest.mark.parametrize(
    "expr",
    [
        "'[1,2]'::vector <-> '[1,2,3]'", "'[1,2]'::vector(3)", "ARRAY[[1,2],[3,4]]::vector",
        "ARRAY[1,NULL]::vector", "'{}'::real[]::vector", "ARRAY[1e300]::float8[]::vector",
        "'[3e38]'::vector + '[3e38]'", "'[1e-30]'::vector * '[1e-30]'", "array_fill(1, ARRAY[16001])::vector",
        "ARRAY[1e39]::numeric[]::vector",
        "subvector('[1,2,3]'::vector, 4, 1)", "subvector('[1,2,3]'::vector, 1, 0)",
        "subvector('[1,2,3]'::vector, -3, 2)", "subvector('[1,2,3]'::vector, -2147483648, 1)",
        "subvector('[1,2,3]'::vector, 2, -1)", "array_fill(1, ARRAY[16000])::vector || '[1]'",
        "vector_avg('{1}')", "vector_avg(array_fill(1::float8, ARRAY[16002]))",
        "B'101' <~> B'1010'", "B'101' <%> B'10'", "hamming_distance(B'1', B'')",
        "jaccard_distance(binary_quantize('[1,-1]'::vector), binary_quantize('[1,-1,1]'::vector))",
    ],
)
def test_refused_expressions_match(ruv_any, pgv, expr):
    want = refusal(pgv, expr)
    assert want is not None
    assert refusal(ruv_any, expr) == want


def test_bit_distances_are_identical(ruv_any, pgv):
    """hamming_distance / jaccard_distance and `<~>` / `<%>` on bit strings of every length
    around the byte and word boundaries, sparse, dense, empty and full, and on
    binary_quantize of vectors: the same values in both."""
    rng = np.random.default_rng(12)
    a, b = [], []
    for n in (1, 7, 8, 9, 31, 63, 64, 65, 127, 1000, 16000):
        for density in (0.0, 0.05, 0.5, 1.0):
            a.append("".join("1" if x < density else "0" for x in rng.random(n)))
            b.append("".join("1" if x < density else "0" for x in rng.random(n)))
        a.append("1" * n)
        b.append("0" * n)
    sql = ("SELECT x::varbit <~> y::varbit, x::varbit <%%> y::varbit, "
           "hamming_distance(x::varbit, y::varbit), jaccard_distance(x::varbit, y::varbit) "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(x, y, i) ORDER BY i")
    want = rows(pgv, sql, (a, b))
    assert rows(ruv_any, sql, (a, b)) == want
    assert any(0 < r[0] for r in want) and any(0 < r[1] < 1 for r in want)
    vs = [f32_literal(v) for v in vectors(13)]
    sql = ("SELECT binary_quantize(x::vector) <~> binary_quantize(y::vector), "
           "binary_quantize(x::vector) <%%> binary_quantize(y::vector) "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(x, y, i) "
           "WHERE vector_dims(x::vector) = vector_dims(y::vector) ORDER BY i")
    pairs = (vs, vs[1:] + vs[:1])
    assert rows(ruv_any, sql, pairs) == rows(pgv, sql, pairs)
