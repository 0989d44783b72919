"""The SaaS example of the RuVector multi-tenancy specification, runnable.

`VectorService` is the specification's class, unchanged. What an application adds around it
is connection setup, in `make_pool`:

- psycopg 3 binds parameters on the server by default, and PostgreSQL cannot take a
  parameter in `SET ruvector.tenant_id = $1`; the pool's connections therefore use
  `psycopg.ClientCursor`, which binds on the client (as psycopg2 always did).
- Embeddings arrive as Python lists; a dumper sends lists as `vector` literals, so
  `vec <-> %s` compares vectors (pgvector-python's `register_vector` covers numpy arrays).
"""

import psycopg
from psycopg.adapt import Dumper
from psycopg_pool import ConnectionPool


# Application code
class VectorService:
    def __init__(self, db_pool):
        self.pool = db_pool

    def search(self, tenant_id: str, query_vec: list, k: int = 10):
        with self.pool.connection() as conn:
            # Set tenant context
            conn.execute("SET ruvector.tenant_id = %s", [tenant_id])

            # Search (automatically scoped to tenant)
            results = conn.execute("""
                SELECT id, content, vec <-> %s AS distance
                FROM embeddings
                ORDER BY vec <-> %s
                LIMIT %s
            """, [query_vec, query_vec, k])

            return results.fetchall()

    def insert(self, tenant_id: str, content: str, vec: list):
        with self.pool.connection() as conn:
            conn.execute("SET ruvector.tenant_id = %s", [tenant_id])

            # Insert (tenant_id auto-populated from context)
            conn.execute("""
                INSERT INTO embeddings (content, vec)
                VALUES (%s, %s)
            """, [content, vec])


class ListAsVector(Dumper):
    """Dumps a Python list of numbers as a vector literal."""

    def dump(self, obj):
        return ("[" + ",".join(repr(float(x)) for x in obj) + "]").encode()


def configure(conn):
    conn.adapters.register_dumper(list, ListAsVector)
    # A pooled connection is returned to the pool with the session's tenant still set; the
    # next user sets its own before any statement (VectorService always does), and
    # `reset` below clears it in between anyway.


def reset(conn):
    conn.execute("RESET ruvector.tenant_id")


def make_pool(conninfo: str, **kwargs) -> ConnectionPool:
    return ConnectionPool(
        conninfo,
        kwargs={"autocommit": True, "cursor_factory": psycopg.ClientCursor},
        configure=configure,
        reset=reset,
        open=True,
        **kwargs,
    )


if __name__ == "__main__":
    import os
    import sys

    conninfo = os.environ.get("DATABASE_URL") or (sys.argv[1] if len(sys.argv) > 1 else None)
    if not conninfo:
        sys.exit("usage: vector_service.py <conninfo>   (a database with the embeddings table)")
    with make_pool(conninfo, min_size=1, max_size=4) as pool:
        service = VectorService(pool)
        service.insert("acme-corp", "hello", [0.1] * 3)
        print(service.search("acme-corp", [0.1] * 3, k=3))
