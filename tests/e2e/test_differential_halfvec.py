"""The same halfvec expressions in pgvector 0.8.2 and in ruvector (PostgreSQL 15 and 18), on
random values rather than the few of pgvector's regression file.

Text output and binary send are byte-identical, which checks the rounding of every element
to a half (from text, from vector and from arrays) and of every arithmetic result; distances
agree within the rounding of a float32 sum in a different order; refused values give the same
SQLSTATE and message.
"""

import numpy as np
import psycopg
import pytest

from test_differential import EPS32, bound, refusal, rows

HALF_MAX = 65504.0


def literal(values, digits=9):
    return "[" + ",".join(f"{float(v):.{digits}g}" for v in values) + "]"


def half_literals(seed):
    """Literals of elements at many scales (beyond half precision's digits, near its largest
    value, in its subnormal range, zeros and integers), all within ±65,504 once rounded."""
    rng = np.random.default_rng(seed)
    out = []
    for dim in (1, 2, 3, 8, 15, 16, 17, 100, 384, 768):
        for scale in (1.0, 1e-3, 3e3, 2e4, 1e-5, 1e-7):
            v = np.clip(rng.standard_normal(dim) * scale, -65500, 65500)
            out.append(literal(v, digits=int(rng.integers(3, 12))))
        out.append(literal(np.round(rng.standard_normal(dim) * 10)))
    out += ["[65504,-65504,65519,-65519]", "[6.1e-5,6.0e-8,5.9e-8,2.9e-8,3.0e-8]", "[-0,0,1e-30]",
            "[0.099975586,1.234375,1.2345]", "[2049,2051,4097,4099,32769]"]
    return out


def test_text_binary_and_casts_are_identical(ruv_any, pgv):
    lits = half_literals(11)
    sql = ("SELECT h::text, halfvec_send(h), (lit::vector)::halfvec::text, "
           "(lit::vector)::real[]::halfvec::text, h::vector::text, h::real[]::text "
           "FROM unnest(%s::text[]) WITH ORDINALITY t(lit, i), "
           "LATERAL (SELECT lit::halfvec AS h) s ORDER BY i")
    want = rows(pgv, sql, (lits,))
    got = rows(ruv_any, sql, (lits,))
    assert len(got) == len(want) == len(lits)
    for lit, g, w in zip(lits, got, want):
        assert g[0] == w[0], f"text of {lit[:60]}"
        assert bytes(g[1]) == bytes(w[1]), f"binary of {lit[:60]}"
        assert g[2:] == w[2:], f"casts of {lit[:60]}"


def pairs(seed):
    lits = half_literals(seed)
    rng = np.random.default_rng(seed + 1)
    dims = [lit.count(",") + 1 for lit in lits]
    out = []
    for a, d in zip(lits, dims):
        same = [b for b, e in zip(lits, dims) if e == d]
        out.append((a, same[int(rng.integers(len(same)))]))
    return out


def test_arithmetic_and_aggregates_are_identical_or_refused_alike(ruv_any, pgv):
    def outcome(conn, expr, a, b):
        try:
            return conn.execute(f"SELECT ({expr})::text", (a, b)).fetchone()[0]
        except psycopg.Error as e:
            return e.sqlstate, e.diag.message_primary

    refused = 0
    for a, b in pairs(13):
        for expr in ("%s::halfvec + %s::halfvec", "%s::halfvec - %s::halfvec", "%s::halfvec * %s::halfvec",
                     "l2_normalize(%s::halfvec) || %s::halfvec",
                     "(SELECT avg(v) FROM unnest(ARRAY[%s::halfvec, %s::halfvec]) v)",
                     "(SELECT sum(v) FROM unnest(ARRAY[%s::halfvec, %s::halfvec]) v)",
                     "%s::halfvec < %s::halfvec", "halfvec_cmp(%s::halfvec, %s::halfvec)"):
            want = outcome(pgv, expr, a, b)
            refused += isinstance(want, tuple)
            assert outcome(ruv_any, expr, a, b) == want, f"{expr} of {a[:40]} and {b[:40]}"
    assert refused > 0, "no overflow or underflow was exercised"


def test_distances_agree_within_float_rounding(ruv_any, pgv):
    ps = pairs(17)
    sql = ("SELECT a::halfvec <-> b::halfvec, a::halfvec <=> b::halfvec, a::halfvec <#> b::halfvec, "
           "a::halfvec <+> b::halfvec, l2_norm(a::halfvec), a::halfvec::vector::text, b::halfvec::vector::text "
           "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY t(a, b, i) ORDER BY i")
    want = rows(pgv, sql, ([a for a, _ in ps], [b for _, b in ps]))
    got = rows(ruv_any, sql, ([a for a, _ in ps], [b for _, b in ps]))
    for g, w in zip(got, want):
        # The halves as float64, from the exact text of their widening to real.
        a = np.array([float(x) for x in w[5][1:-1].split(",")])
        b = np.array([float(x) for x in w[6][1:-1].split(",")])
        n, d = len(a), a - b
        l2sq_tol = bound(d * d, n)
        checks = [
            ("l2", g[0], w[0], l2sq_tol / max(w[0], 1e-300) if w[0] > 0 else np.sqrt(l2sq_tol)),
            ("neg_ip", g[2], w[2], bound(a * b, n)),
            ("l1", g[3], w[3], bound(np.abs(d), n)),
            ("norm", g[4], w[4], bound(a * a, n)),
        ]
        if w[1] == w[1]:
            aa, bb = float(np.sum(a * a)), float(np.sum(b * b))
            checks.append(("cosine", g[1], w[1],
                           4 * n * EPS32 * float(np.sum(np.abs(a * b))) / np.sqrt(aa * bb) + 1e-7))
        else:
            assert g[1] != g[1], "cosine distance of a zero vector is NaN in both"
        for name, gv, wv, tol in checks:
            assert abs(gv - wv) <= tol, f"{name} dim={n}: ruvector {gv!r} pgvector {wv!r} tol {tol!r}"


@pytest.mark.parametrize(
    "expr",
    [
        "'[65520]'::halfvec", "'[1,-1e5]'::halfvec", "'[4e38]'::halfvec", "'[NaN]'::halfvec",
        "'[1,Infinity]'::halfvec", "'[1,2'::halfvec", "'[]'::halfvec", "'[1,2]'::halfvec(3)",
        "'[65520]'::vector::halfvec", "'[1,70000.5]'::vector::halfvec", "ARRAY[1e5]::real[]::halfvec",
        "ARRAY[1e300]::float8[]::halfvec", "ARRAY[70000]::int[]::halfvec", "ARRAY[1,NULL]::real[]::halfvec",
        "'[60000]'::halfvec + '[60000]'", "'[-60000]'::halfvec - '[60000]'", "'[300]'::halfvec * '[300]'",
        "'[1e-4]'::halfvec * '[1e-4]'", "'[1,2]'::halfvec <=> '[1]'", "'[1,2]'::halfvec - '[1]'",
        "array_fill(1, ARRAY[16000])::halfvec || '[1]'", "subvector('[1,2,3]'::halfvec, 4, 1)",
        "halfvec_avg('{1}')", "'[1,2,3]'::halfvec::vector(2)",
    ],
)
def test_refused_values_match(ruv_any, pgv, expr):
    want = refusal(pgv, expr)
    assert want is not None, "pgvector accepted it"
    assert refusal(ruv_any, expr) == want
