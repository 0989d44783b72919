"""pgvector's Python client (PyPI `pgvector`, psycopg 3) against ruvector, unchanged."""

import struct

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector


@pytest.fixture
def conn(ruv_any):
    register_vector(ruv_any)
    ruv_any.execute("DROP TABLE IF EXISTS py_items")
    ruv_any.execute("CREATE TABLE py_items (id bigserial PRIMARY KEY, embedding vector(384))")
    yield ruv_any
    ruv_any.execute("DROP TABLE IF EXISTS py_items")


def sample(rng, n):
    """Float32 rows with the awkward values: signed zeros, subnormals, extremes."""
    rows = rng.standard_normal((n, 384)).astype(np.float32)
    rows[0, :6] = [0.0, -0.0, 1e-45, -3.4028235e38, 3.4028235e38, 1.1754944e-38]
    rows[1] = rows[1] * np.float32(1e-30)
    return rows


@pytest.mark.parametrize("fmt", ["t", "b"], ids=["text", "binary"])
def test_numpy_round_trip(conn, fmt):
    rows = sample(np.random.default_rng(7), 50)
    with conn.cursor() as cur:
        cur.executemany(f"INSERT INTO py_items (embedding) VALUES (%{fmt})", [(r,) for r in rows])
    for binary in (False, True):
        got = conn.execute("SELECT embedding FROM py_items ORDER BY id", binary=binary).fetchall()
        assert len(got) == len(rows)
        for (vec,), want in zip(got, rows):
            assert vec.dtype == np.float32
            assert vec.tobytes() == want.tobytes(), "every bit, signed zeros included"


def test_binary_copy_round_trip(conn):
    rows = sample(np.random.default_rng(11), 100)
    with conn.cursor() as cur:
        with cur.copy("COPY py_items (embedding) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["vector"])
            for r in rows:
                copy.write_row([r])
        with cur.copy("COPY (SELECT embedding FROM py_items ORDER BY id) TO STDOUT WITH (FORMAT BINARY)") as copy:
            copy.set_types(["vector"])
            got = [row[0] for row in copy.rows()]
    assert [g.tobytes() for g in got] == [r.tobytes() for r in rows]


def test_knn_query_through_the_client(conn):
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((200, 384)).astype(np.float32)
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO py_items (embedding) VALUES (%b)", [(r,) for r in rows])
    q = rows[17]
    got = conn.execute(
        "SELECT id - 1 FROM py_items ORDER BY embedding <-> %b, id LIMIT 5", (q,)
    ).fetchall()
    want = np.argsort(np.linalg.norm(rows.astype(np.float64) - q, axis=1), kind="stable")[:5]
    assert [g[0] for g in got] == list(want)


def copy_one_field(conn, field: bytes):
    """COPY ... FROM STDIN (FORMAT BINARY) with one row holding one raw vector field."""
    stream = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
    stream += struct.pack("!hi", 1, len(field)) + field + struct.pack("!h", -1)
    conn.execute("DROP TABLE IF EXISTS py_raw")
    conn.execute("CREATE TABLE py_raw (v vector)")
    with conn.cursor() as cur:
        with cur.copy("COPY py_raw FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(stream)


def vec_bytes(dim, unused, values):
    return struct.pack("!HH", dim, unused) + b"".join(struct.pack("!f", v) for v in values)


@pytest.mark.parametrize(
    "field, sqlstate, message",
    [
        (vec_bytes(0, 0, []), "22000", "vector must have at least 1 dimension"),
        (vec_bytes(2, 1, [1, 2]), "22000", "expected unused to be 0, not 1"),
        (vec_bytes(2, 0, [1, float("nan")]), "22000", "NaN not allowed in vector"),
        (vec_bytes(1, 0, [float("inf")]), "22000", "infinite value not allowed in vector"),
        (vec_bytes(16001, 0, []), "54000", "vector cannot have more than 16000 dimensions"),
        (vec_bytes(3, 0, [1, 2]), "08P01", "insufficient data left in message"),
    ],
    ids=["no-dims", "unused", "nan", "inf", "too-many-dims", "truncated"],
)
def test_bad_binary_input_is_refused(ruv_any, field, sqlstate, message):
    with pytest.raises(psycopg.Error) as err:
        copy_one_field(ruv_any, field)
    assert err.value.sqlstate == sqlstate
    assert message in str(err.value)
    # the session is still usable
    assert ruv_any.execute("SELECT '[1,2,3]'::vector <-> '[3,2,1]'").fetchone()[0] == pytest.approx(8**0.5)


def test_binary_typmod_is_enforced(conn):
    with pytest.raises(psycopg.Error) as err:
        conn.execute("INSERT INTO py_items (embedding) VALUES (%b)", (np.ones(3, dtype=np.float32),))
    assert err.value.sqlstate == "22000"
    assert "expected 384 dimensions, not 3" in str(err.value)
