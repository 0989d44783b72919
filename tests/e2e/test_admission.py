"""Rate limits and weighted fair scheduling with real sessions. Timing assertions compare
counts and ratios measured in the same run, with the margins the issue states."""

import statistics
import threading
import time

import psycopg
import pytest

from tenancy_fixtures import admin_dsn, dsn, fresh_database

DB = "ruvector_admission"


def su(db=DB):
    return psycopg.connect(admin_dsn(db), autocommit=True)


def app(tenant):
    c = psycopg.connect(dsn("rv_app", DB), autocommit=True)
    c.execute("SELECT set_config('ruvector.tenant_id', %s, false)", (tenant,))
    return c


def server_setting(name, value):
    with su("postgres") as c:
        if value is None:
            c.execute(f"ALTER SYSTEM RESET {name}")
        else:
            c.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        c.execute("SELECT pg_reload_conf()")
    time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def database():
    with fresh_database(DB) as c:
        c.execute("CREATE TABLE items (id bigserial PRIMARY KEY, tenant_id text NOT NULL "
                  "DEFAULT current_setting('ruvector.tenant_id'), vec vector(16))")
        c.execute("CREATE INDEX ON items (tenant_id)")
        c.execute("SELECT ruvector_enable_tenant_rls('items')")
        c.execute("GRANT SELECT, INSERT ON items TO ruvector_user")
        tenants = {
            "rl-a": '{"max_qps": 50}', "rl-b": '{"max_qps": 50}',
            "noisy": '{"max_qps": 0}', "quiet": '{"max_qps": 0}',
            "w2": '{"max_qps": 0, "weight": 2}', "w1": '{"max_qps": 0, "weight": 1}',
            "hold": '{"max_qps": 0}', "wait": '{"max_qps": 0}',
        }
        for t, opts in tenants.items():
            c.execute("SELECT ruvector_tenant_create(%s, %s)", (t, opts))
        c.execute("SET ruvector.tenant_id = '*'")
        c.execute("INSERT INTO items (tenant_id, vec) SELECT 'noisy', array_fill(random()::real, ARRAY[16])::vector "
                  "FROM generate_series(1, 60000)")
        c.execute("INSERT INTO items (tenant_id, vec) SELECT t, array_fill(1::real, ARRAY[16])::vector "
                  "FROM unnest(ARRAY['quiet','w1','w2','hold','wait','rl-a','rl-b']) t, generate_series(1, 3000)")
        c.execute("VACUUM ANALYZE items")
    yield
    server_setting("ruvector.max_active_statements", None)
    server_setting("ruvector.admission_control", None)


def test_rate_limit_admits_rate_times_time_plus_burst_and_isolates_tenants():
    # A statement that costs next to nothing (a primary-key lookup), so that the driver can
    # offer several times the limit whatever plan the rest of the table's rows get.
    errors_b = []

    def steady_b(stop):
        with app("rl-b") as c:
            while not stop.is_set():
                try:
                    c.execute("SELECT 1 FROM items WHERE id = 1")
                except psycopg.Error as e:
                    errors_b.append(e)
                time.sleep(1 / 40)  # 40 statements per second, under its 50

    stop = threading.Event()
    other = threading.Thread(target=steady_b, args=(stop,))
    other.start()
    admitted, refused = 0, []
    with app("rl-a") as c:
        start = time.monotonic()
        tick = start
        while time.monotonic() - start < 2.0:
            try:
                c.execute("SELECT 1 FROM items WHERE id = 1")
                admitted += 1
            except psycopg.Error as e:
                refused.append(e)
            tick += 1 / 500
            time.sleep(max(0.0, tick - time.monotonic()))
        elapsed = time.monotonic() - start
    stop.set()
    other.join()
    offered = admitted + len(refused)
    expected = 50 * elapsed + 50  # rate x time + burst (ruvector.rate_burst_seconds = 1)
    print(f"offered {offered} in {elapsed:.2f} s, admitted {admitted}, expected {expected:.0f}")
    assert offered > 3 * expected, "the driver must offer well above the limit"
    assert abs(admitted - expected) <= 0.10 * expected
    assert {e.sqlstate for e in refused} == {"53000"}
    retry = [int(e.diag.message_detail.split()[2]) for e in refused]
    assert all(e.diag.message_detail.startswith("retry after ") for e in refused)
    assert 1 <= min(retry) and max(retry) <= 20, "one token every 20 ms at 50/s"
    assert errors_b == [], "another tenant within its own limit is unaffected"
    with su() as c:
        row = c.execute("SELECT admitted, rate_limited FROM ruvector.tenant_stats WHERE tenant_id = 'rl-a'").fetchone()
    assert row == (admitted, len(refused))


def p99(samples):
    return statistics.quantiles(samples, n=100)[98]


def pgbench(tenant, sql, *args, log_dir=None, popen=False):
    """Runs PostgreSQL's pgbench as `rv_app` of `tenant` (a C client, so the measurements are
    not bent by this test process)."""
    import os
    import subprocess
    import tempfile

    bindir = os.environ.get("RUVECTOR_PG15_BIN", "/usr/lib/postgresql/15/bin")
    script = tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False, dir=log_dir)
    script.write(sql + ";\n")
    script.close()
    conninfo = psycopg.conninfo.conninfo_to_dict(dsn("rv_app", DB))
    env = dict(os.environ, PGOPTIONS=f"-c ruvector.tenant_id={tenant}", PGHOST=conninfo["host"],
               PGPORT=str(conninfo["port"]), PGUSER="rv_app")
    cmd = [f"{bindir}/pgbench", "-n", *args, "-f", script.name, DB]
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=log_dir)
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, cwd=log_dir)


def quiet_latencies(n=1000, warm_up=50):
    """The quiet tenant's statement latencies in seconds, from pgbench's per-transaction log,
    after the first `warm_up` statements of its new session (cold caches)."""
    import glob
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        pgbench("quiet", "SELECT sum(vec <-> array_fill(0.5::real, ARRAY[16])::vector) FROM items",
                "-c", "1", "-t", str(n + warm_up), "--log", "--log-prefix=quiet", log_dir=d)
        out = []
        for f in glob.glob(f"{d}/quiet*"):
            out += [int(line.split()[2]) / 1e6 for line in open(f)]
    assert len(out) == n + warm_up
    return out[warm_up:]


def noisy_backends(c):
    """The noisy load's sessions connected to the server (pgbench's client backends)."""
    return c.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench' "
                     "AND backend_type = 'client backend'").fetchone()[0]


def with_noise(fn, sessions=8):
    """Runs `fn` while the noisy tenant loops heavy scans on `sessions` connections."""
    noise = pgbench("noisy", "SELECT sum(vec <-> array_fill(0.3::real, ARRAY[16])::vector) FROM items",
                    "-c", str(sessions), "-j", "2", "-T", "120", popen=True)
    # Measure once every noisy session is connected (backend start-up is not the load).
    deadline = time.monotonic() + 60
    with su() as c:
        while time.monotonic() < deadline:
            if noisy_backends(c) >= sessions:
                break
            time.sleep(0.1)
    # And once their first statements ran (new backends' caches): the goal is about a
    # noisy tenant's steady load, not its connection storm.
    time.sleep(3.0)
    try:
        assert noise.poll() is None, "the noisy load must be running"
        return fn()
    finally:
        noise.terminate()
        noise.wait()
        # Queued statements of the closed sessions still run until their backends notice:
        # measure nothing until they are gone.
        with su() as c:
            while noisy_backends(c) and time.monotonic() < deadline + 60:
                time.sleep(0.1)
        time.sleep(0.5)


def test_noisy_neighbour_cannot_blow_up_a_quiet_tenants_latency_at_default_settings():
    # Nothing configured: the server's default execution slots (four times the CPUs) and both
    # tenants at the default max_concurrent (10); only max_qps is lifted so that rate limits
    # stay out of the way. Before the reserve slots and the placement of backlogged tenants,
    # these defaults made the quiet tenant wait for one of the noisy tenant's statements to
    # end: p99 190-250x its p99 alone, 4-6x worse than with admission control off.
    server_setting("ruvector.max_active_statements", None)

    def quiet():
        return quiet_latencies(2000)

    def measure():
        alone = quiet()
        with8 = with_noise(quiet, 8)
        with32 = with_noise(quiet, 32)
        return alone, with8, with32

    alone, with8, with32 = measure()
    if max(p99(with8), p99(with32)) > 3 * p99(alone):
        # One hiccup of this shared machine is measured again, alone and with noise; a
        # scheduler that does not protect the quiet tenant fails both measurements.
        print(f"re-measuring: {p99(with8) / p99(alone):.2f}x, {p99(with32) / p99(alone):.2f}x")
        alone, with8, with32 = measure()
    server_setting("ruvector.admission_control", "off")
    off = with_noise(quiet, 8)
    server_setting("ruvector.admission_control", None)
    med = statistics.median
    print(f"quiet tenant p50 / p99 ms: alone {med(alone) * 1000:.2f} / {p99(alone) * 1000:.2f}; "
          f"beside 8 noisy sessions {med(with8) * 1000:.2f} / {p99(with8) * 1000:.2f} "
          f"({p99(with8) / p99(alone):.2f}x); beside 32 {med(with32) * 1000:.2f} / "
          f"{p99(with32) * 1000:.2f} ({p99(with32) / p99(alone):.2f}x); beside 8 without "
          f"admission control {med(off) * 1000:.2f} / {p99(off) * 1000:.2f} ({p99(off) / p99(alone):.2f}x)")
    # The goal is p99 <= 2x and p50 <= 1.2x alone; the assertions keep a margin so that CI
    # on a shared machine does not flake (the benchmark report has the tight figures).
    for beside in (with8, with32):
        assert p99(beside) <= 3 * p99(alone)
        assert med(beside) <= 1.5 * med(alone)
    assert p99(with8) <= 0.5 * p99(off), "admission control must protect, not hurt"


def test_a_quiet_tenants_statement_moves_a_busy_tenants_running_statements_off_its_cpu():
    """A backend places itself when its statement starts; a busy tenant's statements that
    started while no quiet tenant was active are moved as soon as one becomes active, not
    when they end (bulk inserts of seconds ran beside the quiet tenant until then)."""
    import os

    server_setting("ruvector.max_active_statements", None)
    with su() as c:
        server = c.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'").fetchone()[0]
    cpus = sorted(os.sched_getaffinity(server))
    if len(cpus) < 2:
        pytest.skip("one CPU: there is no CPU to keep free for quiet tenants")
    sessions = status_with_capacity()[2]  # more than the busy tenant may run: backlogged
    statement = "SELECT pg_sleep(4) FROM items LIMIT 1"
    errors = []

    def hold():
        try:
            with app("hold") as c:
                c.execute(statement)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=hold) for _ in range(sessions)]
    for t in threads:
        t.start()
    try:
        with su() as c:
            def running():
                return [r[0] for r in c.execute(
                    "SELECT pid FROM pg_stat_activity WHERE query = %s AND wait_event = 'PgSleep'",
                    (statement,))]
            deadline = time.monotonic() + 10
            while len(running()) < sessions * 3 // 4 and time.monotonic() < deadline:
                time.sleep(0.05)
            # The quiet tenant's last statement (earlier tests) is more than a second ago.
            time.sleep(1.2)
            pids = running()
            assert len(pids) == sessions * 3 // 4, "the busy tenant runs as many as it may"
            for pid in pids:
                assert sorted(os.sched_getaffinity(pid)) == cpus, "alone, it may use every CPU"
            with app("quiet") as q:
                q.execute("SELECT count(*) FROM items").fetchone()
            assert sorted(running()) == sorted(pids), "the busy statements still run"
            for pid in pids:
                placed = sorted(os.sched_getaffinity(pid))
                assert cpus[-1] not in placed and set(placed) < set(cpus), (pid, placed)
                assert os.sched_getscheduler(pid) == os.SCHED_BATCH, pid
    finally:
        for t in threads:
            t.join()
    assert not errors, errors


@pytest.mark.parametrize("slots", [1, "default"])
def test_weights_two_to_one_give_throughput_two_to_one(slots):
    if slots == "default":
        # Four times the CPUs; as many sessions per tenant as there are slots keeps both tenants
        # backlogged on any machine.
        server_setting("ruvector.max_active_statements", None)
        sessions = status_with_capacity()[2]
    else:
        server_setting("ruvector.max_active_statements", slots)
        sessions = 4
    counts = {"w2": 0, "w1": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def worker(tenant):
        with app(tenant) as c:
            while not stop.is_set():
                c.execute("SELECT pg_sleep(0.01) FROM items LIMIT 1")
                with lock:
                    counts[tenant] += 1

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("w2", "w1") for _ in range(sessions)]
    for t in threads:
        t.start()
    # Steady state: a tenant's first statements look like a quiet tenant's (admitted while it
    # ran nothing), which halves the other's share for the next second.
    time.sleep(1.5)
    with lock:
        start = dict(counts)
    time.sleep(5)
    with lock:
        done = {t: counts[t] - start[t] for t in counts}
    stop.set()
    for t in threads:
        t.join()
    ratio = done["w2"] / done["w1"]
    print(f"weights 2:1, {slots} slot(s), {sessions} sessions each -> statements {done}, ratio {ratio:.2f}")
    assert done["w1"] > 50
    assert 1.8 <= ratio <= 2.2


def status_with_capacity():
    with su() as c:
        return c.execute("SELECT running, waiting, capacity FROM ruvector_admission_status()").fetchone()


def status():
    with su() as c:
        return c.execute("SELECT running, waiting FROM ruvector_admission_status()").fetchone()


def test_cancelled_timed_out_or_suspended_waiters_leave_no_slot_taken():
    server_setting("ruvector.max_active_statements", 1)
    holder = threading.Thread(target=lambda: app("hold").execute("SELECT pg_sleep(4) FROM items LIMIT 1"))
    holder.start()
    time.sleep(0.4)
    assert status() == (1, 0)

    # 1. A waiting statement cancelled by pg_cancel_backend.
    w = app("wait")
    pid = w.info.backend_pid
    threading.Timer(0.3, lambda: su().execute("SELECT pg_cancel_backend(%s)", (pid,))).start()
    with pytest.raises(psycopg.Error) as e:
        w.execute("SELECT count(*) FROM items")
    assert e.value.sqlstate == "57014"
    assert status() == (1, 0)

    # 2. statement_timeout while waiting.
    w.execute("SET statement_timeout = 200")
    with pytest.raises(psycopg.Error) as e:
        w.execute("SELECT count(*) FROM items")
    assert e.value.sqlstate == "57014"
    w.execute("RESET statement_timeout")
    assert status() == (1, 0)

    # 3. The admission timeout: 53000 with a retry hint.
    with su() as s:
        s.execute("SET ruvector.admission_timeout = 200")
        s.execute("SET ruvector.tenant_id = 'wait'")
        with pytest.raises(psycopg.Error) as e:
            s.execute("SELECT count(*) FROM items")
        assert e.value.sqlstate == "53000" and e.value.diag.message_detail.startswith("retry after")
    assert status() == (1, 0)

    # 4. Suspended while waiting.
    threading.Timer(0.3, lambda: su().execute("SELECT ruvector_tenant_suspend('wait')")).start()
    with pytest.raises(psycopg.Error) as e:
        w.execute("SELECT count(*) FROM items")
    assert e.value.sqlstate == "55000"
    su().execute("SELECT ruvector_tenant_resume('wait')")
    assert status() == (1, 0)

    holder.join()
    assert status() == (0, 0)
    # The next statement is admitted at once.
    t = time.monotonic()
    assert w.execute("SELECT count(*) FROM items").fetchone()[0] == 3000
    assert time.monotonic() - t < 1.0
    w.close()
    with su() as c:
        row = c.execute("SELECT queued, wait_ms_total > 0 FROM ruvector.tenant_stats WHERE tenant_id = 'wait'").fetchone()
    assert row[0] >= 4 and row[1]
