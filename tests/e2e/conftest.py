"""Connections to the clusters that scripts/test starts.

RUVECTOR_PG15_DSN  ruvector in PostgreSQL 15 (the primary target)
RUVECTOR_PG18_DSN  ruvector in PostgreSQL 18
PGVECTOR_PG18_DSN  pgvector 0.8.2 in the same PostgreSQL 18 server (the reference)

A missing variable fails the test: these tests never skip silently.
"""

import os

import psycopg
import pytest


def _connect(var):
    dsn = os.environ.get(var)
    if not dsn:
        pytest.fail(f"{var} is not set; run scripts/test, which starts the clusters")
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture
def ruv():
    with _connect("RUVECTOR_PG15_DSN") as conn:
        yield conn


@pytest.fixture(params=["RUVECTOR_PG15_DSN", "RUVECTOR_PG18_DSN"], ids=["pg15", "pg18"])
def ruv_any(request):
    with _connect(request.param) as conn:
        yield conn


@pytest.fixture
def pgv():
    with _connect("PGVECTOR_PG18_DSN") as conn:
        yield conn


@pytest.fixture(autouse=True, scope="session")
def _extension():
    for var in ("RUVECTOR_PG15_DSN", "RUVECTOR_PG18_DSN"):
        with _connect(var) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS ruvector")
