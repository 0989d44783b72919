"""Random and mutated input at every door a client can reach: vector text input, vector binary
input (the receive function, as binary COPY and binary parameters send it), tenant ids (the
setting and the lifecycle functions) and the jsonb options of every function that takes them.
Each input is accepted or refused with a SQLSTATE of its class: never an internal error
(XX000), never a crash (the session answers afterwards). Seeded, bounded in count."""

import json
import random
import struct

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, fresh_database

DB = "ruvector_fuzz"
CASES = 1500

VALID_TEXT = ["[1,2,3]", "[1.5e3, -2e-3, 0]", "[0]", "[3.4028235e38]", "[ 1 , 2 ]", "[-0,+0.5,.5,5.]"]
TEXT_PIECES = ["[", "]", ",", " ", "1", "-", "+", ".", "e", "E", "38", "39", "-45", "nan", "NaN", "inf",
               "Infinity", "-inf", "0x10", "1e1000", "\t", "\n", "9" * 50, "[]", "[[1]]", "'", "\"",
               "\\", "é", "1,", ",1", "1_0"]
OPTION_KEYS = ["max_vectors", "max_collections", "max_qps", "max_storage_gb", "max_concurrent", "weight",
               "integrity_enabled", "isolation_level", "display_name", "dimensions", "metric", "metadata",
               "pin", "auto_promote_to_partition", "auto_promote_to_dedicated", "auto_demote_from_dedicated",
               "auto_demote_from_partition", "check_interval", "enabled", "unknown", ""]
OPTION_VALUES = [0, -1, 1, 2**31, 2**63 - 1, -2**63, 1e308, -1e-308, 0.5, "1", "x", "", None, True, False,
                 [], {}, [1, 2], {"a": 1}, "shared", "partition", "dedicated", "l2", "cosine", "1 hour",
                 "nan", "infinity", "-infinity", "9" * 40, "\u00e9\u4e2d", 16000, 16001]


@pytest.fixture(scope="module")
def su():
    c = fresh_database(DB)
    c.execute("SELECT ruvector_tenant_create('fz', '{\"max_qps\": 0}')")
    c.execute("CREATE TABLE fz_docs (id bigserial, tenant_id text NOT NULL DEFAULT current_setting('ruvector.tenant_id'), "
              "v vector, PRIMARY KEY (tenant_id, id))")
    c.execute("SELECT ruvector_enable_tenant_rls('fz_docs')")
    yield c
    c.close()
    with psycopg.connect(admin_dsn(), autocommit=True) as a:
        a.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def attempt(conn, sql, params, allowed, what):
    """Runs one input; an error must carry a SQLSTATE of an allowed class, and the session must
    answer afterwards. Returns whether the input was accepted."""
    accepted = True
    try:
        conn.execute(sql, params)
    except psycopg.Error as e:
        accepted = False
        # No SQLSTATE: the server did not answer (the connection died).
        assert e.sqlstate, f"{what}: no SQLSTATE, the connection failed: {e}"
        assert e.sqlstate[:2] in allowed and e.sqlstate != "XX000", f"{what}: {e.sqlstate} {e}"
    assert conn.execute("SELECT 1").fetchone()[0] == 1, f"{what}: the session answers"
    return accepted


def mutate_text(rng):
    if rng.random() < 0.5:
        s = list(rng.choice(VALID_TEXT))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(3)
            pos = rng.randrange(len(s) + 1)
            if op == 0:
                s.insert(pos, rng.choice(TEXT_PIECES))
            elif op == 1 and s:
                del s[min(pos, len(s) - 1)]
            elif s:
                s[min(pos, len(s) - 1)] = rng.choice(TEXT_PIECES)
        return "".join(s)
    return "".join(rng.choice(TEXT_PIECES) for _ in range(rng.randint(0, 12)))


def binary_vector(rng):
    """A vector's wire format (int16 dims, int16 unused, float32 each), valid or damaged."""
    dims = rng.choice([0, 1, 3, 16000, 16001, 65535, -1, rng.randint(1, 64)])
    count = dims if 0 <= dims <= 64 and rng.random() < 0.7 else rng.randint(0, 70)
    floats = [rng.choice([rng.uniform(-1e3, 1e3), float("nan"), float("inf"), -0.0, 3.5e38])
              for _ in range(count)]
    data = struct.pack(">hh", max(-32768, min(32767, dims)), rng.choice([0, 0, 1, -1])) + \
        b"".join(struct.pack(">f", f) if abs(f) < 3.4e38 or f != f or abs(f) == float("inf") else b"\x7f\x7f\xff\xff"
                 for f in floats)
    if rng.random() < 0.2:
        data = data[: rng.randint(0, len(data))]
    return data


def test_vector_text_input(su):
    rng = random.Random(1)
    accepted = sum(attempt(su, "SELECT %s::vector", (text,), {"22", "54"}, f"text input {text!r}")
                   for text in (mutate_text(rng) for _ in range(CASES)))
    assert 0 < accepted < CASES, "both valid and invalid inputs were tried"


class RawVector(psycopg.adapt.Dumper):
    """Sends bytes as they are, in binary format, as a parameter of type vector."""

    format = psycopg.pq.Format.BINARY

    def dump(self, obj):
        return obj


def test_vector_binary_input(su):
    rng = random.Random(2)
    dumper = type("VectorBytes", (RawVector,), {"oid": su.execute("SELECT 'vector'::regtype::oid").fetchone()[0]})
    with su.cursor() as cur:
        cur.adapters.register_dumper(bytes, dumper)
        accepted = 0
        for _ in range(CASES):
            data = binary_vector(rng)
            # A truncated message is refused by PostgreSQL's own message reader: 08P01.
            accepted += attempt(cur, "SELECT vector_dims(%b)", (data,), {"22", "54", "08"},
                                f"binary input {data[:16].hex()}")
        assert 0 < accepted < CASES, "both valid and invalid inputs were tried"


def random_tenant_id(rng):
    pieces = ["a", "Z", "0", "-", "_", ".", " ", "*", "'", "\"", "%", "é", "\u4e2d", "\t", "/", "\\", "acme"]
    if rng.random() < 0.1:
        return "x" * rng.choice([63, 64, 65, 200, 5000])
    return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))


def test_tenant_ids(su):
    rng = random.Random(3)
    for i in range(CASES // 3):
        t = random_tenant_id(rng)
        # The setting: accepted or refused by its check (22023, 42704, 55000, 28000, 42501).
        attempt(su, "SELECT set_config('ruvector.tenant_id', %s, false)", (t,), {"22", "42", "55", "28"}, f"setting {t!r}")
        attempt(su, "SELECT count(*) FROM fz_docs", None, {"22", "42", "55", "28"}, f"query under {t!r}")
        su.execute("RESET ruvector.tenant_id")
        attempt(su, "SELECT ruvector_tenant_create(%s)", (t,), {"22", "42", "23", "53"}, f"create {t!r}")
        attempt(su, "SELECT ruvector_tenant_suspend(%s)", (t,), {"22", "42", "55"}, f"suspend {t!r}")
        attempt(su, "SELECT ruvector_tenant_delete(%s, hard => true)", (t,), {"22", "42", "55"}, f"delete {t!r}")


def random_options(rng):
    opts = {}
    for _ in range(rng.randint(0, 4)):
        opts[rng.choice(OPTION_KEYS)] = rng.choice(OPTION_VALUES)
    return json.dumps(opts) if rng.random() < 0.9 else rng.choice(["[]", "1", "\"x\"", "null", "{\"a\": {\"b\": []}}"])


def test_jsonb_options_of_every_function(su):
    rng = random.Random(4)
    allowed = {"22", "42", "23", "53", "55", "0A", "P0"}
    for i in range(CASES // 3):
        opts = random_options(rng)
        name = f"fz{i}"
        attempt(su, "SELECT ruvector_tenant_create(%s, %s::jsonb)", (name, opts), allowed, f"create options {opts}")
        su.execute("SELECT ruvector_tenant_delete(t, hard => true) FROM (SELECT id AS t FROM ruvector.tenants WHERE id = %s) s",
                   (name,))
        attempt(su, "SELECT ruvector_tenant_migrate('fz', 'shared', %s::jsonb)", (opts,), allowed, f"migrate options {opts}")
        attempt(su, "SELECT ruvector_tenant_set_policy(%s::jsonb)", (opts,), allowed, f"policy {opts}")
        su.execute("SET ruvector.tenant_id = 'fz'")
        attempt(su, "SELECT ruvector_collection_create(%s, %s::jsonb)", (f"c{i}", opts), allowed, f"collection options {opts}")
        su.execute("RESET ruvector.tenant_id")
