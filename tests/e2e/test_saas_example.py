"""The specification's SaaS example and Monitoring query, run unchanged."""

import importlib.util
import pathlib

import psycopg
import pytest

from tenancy_fixtures import MONITORING, admin_dsn, dsn, fresh_database

DB = "ruvector_saas"
EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "saas"


def load_example():
    spec = importlib.util.spec_from_file_location("vector_service", EXAMPLE / "vector_service.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def database():
    with fresh_database(DB) as c:
        c.execute((EXAMPLE / "schema.sql").read_text())
        c.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON embeddings TO ruvector_user")
        c.execute("GRANT USAGE ON SEQUENCE embeddings_id_seq TO ruvector_user")
        c.execute("SELECT ruvector_tenant_create('acme-corp', '{\"display_name\": \"Acme\", \"max_vectors\": 1000}')")
        c.execute("SELECT ruvector_tenant_create('startup-xyz', '{\"max_vectors\": 200}')")
    yield


def test_vector_service_with_two_tenants(database):
    example = load_example()
    with example.make_pool(dsn("rv_app", DB), min_size=2, max_size=2) as pool:
        service = example.VectorService(pool)
        for i in range(20):
            service.insert("acme-corp", f"acme doc {i}", [1.0, float(i), 0.0])
        for i in range(5):
            service.insert("startup-xyz", f"xyz doc {i}", [1.0, float(i), 0.0])
        acme = service.search("acme-corp", [1.0, 3.0, 0.0], k=10)
        xyz = service.search("startup-xyz", [1.0, 3.0, 0.0], k=10)
    assert len(acme) == 10 and all(r[1].startswith("acme doc") for r in acme)
    assert acme[0][1] == "acme doc 3" and acme[0][2] == 0.0
    names = [r[1] for r in xyz]
    assert names[0] == "xyz doc 3" and set(names[1:3]) == {"xyz doc 2", "xyz doc 4"}  # a tie
    assert names[3:] == ["xyz doc 1", "xyz doc 0"]


def test_monitoring_query_runs_unchanged(database):
    with psycopg.connect(admin_dsn(DB), autocommit=True) as c:
        rows = c.execute(MONITORING).fetchall()
    by_id = {r[0]: r for r in rows}
    assert by_id["acme-corp"][3] == 20 and by_id["acme-corp"][4] == 1000
    assert float(by_id["acme-corp"][5]) == 2.0
    assert by_id["startup-xyz"][3] == 5
    assert by_id["acme-corp"][8] is not None and by_id["acme-corp"][9] >= 1
    assert rows[0][0] == "acme-corp", "ordered by current_vectors"
