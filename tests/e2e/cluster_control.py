"""Control of the PostgreSQL 15 test cluster that scripts/test starts: pg_ctl and friends as
the postgres user, a kill -9 of the whole server (postmaster and every child), and a
streaming standby of it."""

import contextlib
import os
import signal
import subprocess
import time

import psycopg
import pytest


def pg15(action, *args):
    data, bindir = os.environ.get("RUVECTOR_PG15_DATA"), os.environ.get("RUVECTOR_PG15_BIN")
    if not data or not bindir:
        pytest.fail("RUVECTOR_PG15_DATA / RUVECTOR_PG15_BIN are not set; run scripts/test")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUST_")}
    done = subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/{action}", *args],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    assert done.returncode == 0, f"{action} failed: {done.stderr}"
    return data, bindir


def child_pids(parent):
    """Process ids whose parent is `parent`, from /proc (no procps needed)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # pid (comm) state ppid ...; comm may contain spaces: split after the last ')'
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            found.append(int(entry))
    return found


def kill_9_server():
    data = os.environ["RUVECTOR_PG15_DATA"]
    with open(os.path.join(data, "postmaster.pid")) as f:
        pid = int(f.readline())
    children = child_pids(pid)
    os.kill(pid, signal.SIGKILL)
    for child in children:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        alive = [p for p in [pid, *children] if os.path.exists(f"/proc/{p}")]
        if not alive:
            return
        time.sleep(0.05)
    raise AssertionError(f"server processes still alive: {alive}")


def start_server():
    """Starts the PostgreSQL 15 test cluster again (after kill_9_server) and waits for it."""
    data = os.environ["RUVECTOR_PG15_DATA"]
    pg15("pg_ctl", "-D", data, "-l", os.path.join(data, "server.log"), "-w", "-t", "120", "start")


def stop_and_remove(data, *more):
    """Stops the server of data directory `data` at once (if it runs) and removes it, and
    the other paths given."""
    subprocess.run(["runuser", "-u", "postgres", "--", f"{os.environ['RUVECTOR_PG15_BIN']}/pg_ctl",
                    "-D", data, "-m", "immediate", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(["rm", "-rf", data, *more])


@contextlib.contextmanager
def standby(primary, name, port):
    """A streaming hot standby of the server `primary` (a connection to the PostgreSQL 15 test
    cluster) listening on `port`, from a fresh base backup; stopped and removed afterwards."""
    data = os.environ["RUVECTOR_PG15_DATA"] + "-" + name
    subprocess.run(["rm", "-rf", data], check=True)
    subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", data], check=True)
    pg15("pg_basebackup", "-h", primary.info.host, "-p", str(primary.info.port), "-U", "postgres",
         "-D", data, "-R", "-X", "stream", "-c", "fast")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {port}\nhot_standby = on\nruvector.metrics_address = ''\n")
    try:
        pg15("pg_ctl", "-D", data, "-l", os.path.join(data, "server.log"), "-w", "-t", "60", "start")
        yield
    finally:
        stop_and_remove(data)


def wait_for_replay(standby_conn, lsn, timeout=60):
    """Waits until the standby `standby_conn` is connected to has replayed WAL up to `lsn`."""
    deadline = time.monotonic() + timeout
    while not standby_conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)).fetchone()[0]:
        assert time.monotonic() < deadline, "the standby did not catch up"
        time.sleep(0.1)


@contextlib.contextmanager
def fresh_cluster(name, port, conf=""):
    """A new PostgreSQL 15 cluster with ruvector preloaded, listening on `port` (loopback and
    the test socket directory), with `conf` added to its configuration; yields a libpq
    connection string to its `postgres` database; stopped and removed afterwards."""
    data = os.environ["RUVECTOR_PG15_DATA"] + "-" + name
    sock = psycopg.conninfo.conninfo_to_dict(os.environ["RUVECTOR_PG15_DSN"])["host"]
    subprocess.run(["rm", "-rf", data], check=True)
    subprocess.run(["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "0700", data], check=True)
    pg15("initdb", "-D", data, "--auth=trust", "--locale=C.UTF-8", "-E", "UTF8")
    with open(os.path.join(data, "postgresql.conf"), "a") as f:
        f.write(f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{sock}'\n"
                f"shared_preload_libraries = 'ruvector'\nfsync = off\n{conf}\n")
    try:
        pg15("pg_ctl", "-D", data, "-l", os.path.join(data, "server.log"), "-w", "-t", "60", "start")
        yield f"host={sock} port={port} user=postgres dbname=postgres"
    finally:
        stop_and_remove(data)
