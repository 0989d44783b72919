"""The metrics endpoint (ruvector.metrics_address) and the per-tenant windows, read the way a
monitoring stack reads them: promtool, a real Prometheus server scraping the endpoint, and the
SQL views.

scripts/test starts the PostgreSQL 15 cluster with ruvector.metrics_address set and exports
RUVECTOR_METRICS_URL. These tests shorten ruvector.metrics_window to 2 s (ALTER SYSTEM, undone
at the end) so that windows close while they wait; the rotation itself is unit-tested at any
length.
"""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

import psycopg
import pytest

from tenancy_fixtures import MONITORING, admin_dsn, fresh_database

DB = "ruvector_metrics"
MANY_DB = "ruvector_metrics_many"


def url():
    u = os.environ.get("RUVECTOR_METRICS_URL")
    if not u:
        pytest.fail("RUVECTOR_METRICS_URL is not set; run scripts/test")
    return u


def scrape(path=None):
    target = url() if path is None else urllib.parse.urljoin(url(), path)
    with urllib.request.urlopen(target, timeout=10) as r:
        return r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, rest = series.partition("{")
        labels = {}
        for part in rest.rstrip("}").split('",') if rest else []:
            k, _, v = part.partition('="')
            labels[k] = v.rstrip('"')
        out[(name, frozenset(labels.items()))] = float(value)
    return out


def value(text, name, **labels):
    return samples(text).get((name, frozenset(labels.items())))


@pytest.fixture(scope="module")
def short_windows():
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute("ALTER SYSTEM SET ruvector.metrics_window = 2")
        c.execute("SELECT pg_reload_conf()")
    time.sleep(1.5)  # the launcher reloads on its next wake-up (at most a second)
    yield
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute("ALTER SYSTEM RESET ruvector.metrics_window")
        c.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="module")
def tenants(short_windows):
    """Database DB: tenant m_a (max_vectors 200) with 150 rows, m_b with 10 rows."""
    with fresh_database(DB) as c:
        c.execute("SELECT ruvector_tenant_create('m_a', '{\"max_vectors\": 200, \"max_qps\": 0}')")
        c.execute("SELECT ruvector_tenant_create('m_b', '{\"max_qps\": 0}')")
        c.execute(
            "CREATE TABLE docs (id bigserial PRIMARY KEY, tenant_id text NOT NULL "
            "DEFAULT current_setting('ruvector.tenant_id'), vec vector(3))"
        )
        c.execute("SELECT ruvector_enable_tenant_rls('docs')")
        c.execute("CREATE INDEX ON docs USING ruhnsw (vec vector_l2_ops)")
        c.execute("GRANT SELECT, INSERT ON docs TO rv_app")
        c.execute("GRANT USAGE ON SEQUENCE docs_id_seq TO rv_app")
    for tenant, n in (("m_a", 150), ("m_b", 10)):
        with app(tenant) as a:
            a.execute(
                "INSERT INTO docs (vec) SELECT ARRAY[random(), random(), random()]::real[]::vector "
                "FROM generate_series(1, %s)",
                (n,),
            )
    yield
    with psycopg.connect(admin_dsn(), autocommit=True) as c:
        c.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


def app(tenant):
    c = psycopg.connect(psycopg.conninfo.make_conninfo(admin_dsn(DB), user="rv_app"), autocommit=True)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def search(conn, times):
    for i in range(times):
        conn.execute(
            "SELECT id FROM docs ORDER BY vec <-> %s::vector LIMIT 5", (f"[{i % 7 / 7},0.5,0.5]",)
        ).fetchall()


def test_scrape_passes_promtool_and_shows_what_each_tenant_did(tenants):
    with app("m_a") as a:
        search(a, 20)
    text = scrape()
    assert value(text, "ruvector_tenant_vectors", database=DB, tenant="m_a") == 150
    assert value(text, "ruvector_tenant_vectors", database=DB, tenant="m_b") == 10
    assert value(text, "ruvector_tenant_quota_usage", database=DB, tenant="m_a", resource="vectors") == 0.75
    count = value(text, "ruvector_tenant_search_latency_seconds_count", database=DB, tenant="m_a")
    assert count >= 20
    assert value(text, "ruvector_tenant_search_latency_seconds_count", database=DB, tenant="m_b") == 0
    assert value(text, "ruvector_tenant_statements_total", database=DB, tenant="m_a", operation="insert") == 1
    assert value(text, "ruvector_index_searches_total") >= 20
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_windows_give_sql_quantiles_rates_and_the_spec_dashboard(tenants):
    with app("m_a") as a:
        deadline = time.monotonic() + 20
        while True:
            search(a, 10)
            row = a.execute(
                "SELECT search_latency_p50_ms, search_latency_p99_ms, qps FROM ruvector.my_tenant_stats"
            ).fetchone()
            if row[2] and row[2] > 0 and row[1] is not None:
                break
            assert time.monotonic() < deadline, f"no window with searches closed: {row}"
            time.sleep(0.5)
        p50, p99, qps = row
        assert 0 < p50 <= p99, row
    with psycopg.connect(admin_dsn(DB), autocommit=True) as su:
        su.execute("SET ruvector.tenant_id = '*'")
        count, start = su.execute(
            "SELECT request_count, window_start FROM ruvector.tenant_quotas WHERE tenant_id = 'm_a'"
        ).fetchone()
        assert count is not None and count >= 0 and start is not None
        # The specification's dashboard query, verbatim.
        rows = su.execute(MONITORING).fetchall()
        assert [(r[0], r[3], float(r[5])) for r in rows][0] == ("m_a", 150, 75.0)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_real_prometheus_scrapes_the_endpoint(tenants):
    assert shutil.which("prometheus"), "prometheus is installed by scripts/test (Debian package)"
    target = urllib.parse.urlparse(url()).netloc
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        config = os.path.join(d, "prometheus.yml")
        with open(config, "w") as f:
            f.write(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: ruvector\n"
                f"    static_configs:\n      - targets: ['{target}']\n"
            )
        proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={d}/data",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            api = f"http://127.0.0.1:{port}"

            def query(q):
                with urllib.request.urlopen(f"{api}/api/v1/query?query={urllib.parse.quote(q)}", timeout=5) as r:
                    body = json.load(r)
                assert body["status"] == "success", body
                return [float(s["value"][1]) for s in body["data"]["result"]]

            deadline = time.monotonic() + 60
            wanted = {
                f'ruvector_tenant_vectors{{database="{DB}",tenant="m_a"}}': lambda v: v == [150.0],
                f'ruvector_tenant_quota_usage{{database="{DB}",tenant="m_a",resource="vectors"}}': lambda v: v
                == [0.75],
                f'ruvector_tenant_search_latency_p99{{database="{DB}",tenant="m_a"}}': lambda v: v and v[0] > 0,
                f'ruvector_tenant_qps{{database="{DB}",tenant="m_a"}}': lambda v: v and v[0] > 0,
                f'up{{job="ruvector"}}': lambda v: v == [1.0],
            }
            seen = {}
            with app("m_a") as a:
                while wanted:
                    search(a, 5)
                    for q, ok in list(wanted.items()):
                        try:
                            seen[q] = query(q)
                        except (urllib.error.URLError, ConnectionError):
                            continue  # Prometheus still starting
                        if ok(seen[q]):
                            del wanted[q]
                    assert time.monotonic() < deadline, f"not seen by Prometheus: {list(wanted)}; last {seen}"
                    time.sleep(0.5)
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def test_ten_thousand_tenants_give_a_bounded_scrape(short_windows):
    with fresh_database(MANY_DB) as c:
        c.execute("SELECT count(ruvector_tenant_create('many' || i)) FROM generate_series(1, 10000) i")
        max_tenants = int(c.execute("SHOW ruvector.metrics_max_tenants").fetchone()[0])
    try:
        text = scrape()
        mine = {
            dict(labels)["tenant"]
            for (name, labels) in samples(text)
            if name == "ruvector_tenant_vectors" and dict(labels).get("database") == MANY_DB
        }
        assert len(mine) == max_tenants + 1 and "_other" in mine
        assert value(text, "ruvector_metrics_folded_tenants", database=MANY_DB) == 10000 - max_tenants
        assert value(text, "ruvector_tenant_vectors", database=MANY_DB, tenant="_other") == 0
    finally:
        with psycopg.connect(admin_dsn(), autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {MANY_DB} WITH (FORCE)")


def test_bad_requests_neither_block_nor_break_the_endpoint(tenants):
    u = urllib.parse.urlparse(url())
    host, port = u.hostname, u.port
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape("/other")
    assert e.value.code == 404
    req = urllib.request.Request(url(), data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 405
    # A client that sends half a request and waits, one that sends garbage, and one that asks
    # for the metrics and never reads them.
    slow = socket.create_connection((host, port))
    slow.sendall(b"GET /metr")
    garbage = socket.create_connection((host, port))
    garbage.sendall(b"\x00\x01\x02 not http\r\n\r\n")
    silent = socket.socket()
    silent.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    silent.connect((host, port))
    silent.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        for _ in range(3):
            started = time.monotonic()
            assert "ruvector_admission_capacity" in scrape()
            assert time.monotonic() - started < 5
    finally:
        for s in (slow, garbage, silent):
            s.close()
    assert "ruvector_admission_capacity" in scrape()
