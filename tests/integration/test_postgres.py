#!/usr/bin/env python3
"""The PostgreSQL store against a real server (tests/integration/pg.py: TEST_DATABASE_URL, or a
throwaway cluster): its schema, brought up to date by `runtara-environment migrate`, and a daemon
that lives through its server's restart. (The store conformance suite runs on PostgreSQL as
store_pg; test_instances_pg and test_recovery_pg rerun those suites on it.)"""
import concurrent.futures
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import pg  # noqa: E402
from harness import DAEMON, Daemon, main, test, time_scale  # noqa: E402
from sdkflow import events, image, shim_pid, start, steps_log, wait, wait_until  # noqa: E402

TABLES = ["checkpoints", "custom_signals", "daemons", "events", "image_blobs", "images",
          "instances", "schema_migrations", "signals"]


def migrate(url, **env):
    e = dict(os.environ, RUNTARA_DATABASE_URL=url, **env)
    return subprocess.run([DAEMON, "migrate"], env=e, capture_output=True, text=True, timeout=60)


@test
def migrate_applies_the_schema_once_while_daemons_race():
    """Four processes migrate one empty database at once: the advisory lock lets one apply each
    migration, and the others find it done."""
    url = pg.fresh_database()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda _: migrate(url), range(4)))
    for p in runs:
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("postgres schema at version "), p.stdout
    version = int(runs[0].stdout.split()[4])
    assert version >= 1
    rows = pg.psql(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows.splitlines()[0] == "1|initial" and len(rows.splitlines()) == version, rows
    tables = pg.psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                          "ORDER BY tablename").split()
    assert tables == TABLES, tables
    # the types the issue asks for: times, bytes, JSON, statuses
    cols = dict(line.split("|") for line in pg.psql(
        url, "SELECT table_name || '.' || column_name, udt_name FROM information_schema.columns "
             "WHERE table_schema = 'public'").splitlines())
    assert cols["instances.created_at"] == "timestamptz", cols
    assert cols["checkpoints.data"] == "bytea", cols
    assert cols["instances.input"] == "json", cols
    assert cols["instances.status"] == "instance_status", cols
    assert cols["daemons.lease_until"] == "timestamptz", cols
    assert cols["image_blobs.data"] == "bytea", cols
    # and again: nothing to do
    p = migrate(url)
    assert p.returncode == 0 and p.stdout == runs[0].stdout, p


@test
def migrate_refuses_a_schema_newer_than_it_knows():
    url = pg.fresh_database()
    assert migrate(url).returncode == 0
    pg.psql(url, "INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')")
    p = migrate(url)
    assert p.returncode == 1, p
    assert "database schema version 999 is newer than this binary supports" in p.stderr, p.stderr


@test
def an_unreachable_server_is_named_and_its_password_never_shown():
    p = migrate("postgresql://runtara:s3cret@/runtara?host=/nonexistent/dir")
    assert p.returncode == 1, p
    assert "could not connect to PostgreSQL:" in p.stderr and "/nonexistent/dir" in p.stderr, \
        p.stderr
    assert "hint: check RUNTARA_DATABASE_URL" in p.stderr, p.stderr
    assert "s3cret" not in p.stderr, p.stderr
    # a URL libpq cannot parse stops it before any connection, quoted nowhere
    p = migrate("postgresql://runtara:s3cret@db/runtara?bogus=1")
    assert p.returncode == 2 and "invalid RUNTARA_DATABASE_URL" in p.stderr, p
    assert "s3cret" not in p.stderr, p.stderr


class Cluster:
    """A cluster of the test's own, to stop and start (scripts/pg-cluster.sh)."""

    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="runtara-pgf-")
        os.chmod(self.top, 0o755)
        self.dir = os.path.join(self.top, "cluster")
        self.url = self.run("start")

    def run(self, what):
        p = subprocess.run([os.path.join(pg.ROOT, "scripts", "pg-cluster.sh"), what, self.dir],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def signal(self, sig):
        """Send sig to the server and every process of it: SIGSTOP freezes it without closing a
        connection (a frozen machine, a server that stopped answering), SIGCONT thaws it."""
        with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
            postmaster = int(f.readline())
        pids = [postmaster]
        for entry in os.listdir("/proc"):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == postmaster:
                        pids.append(int(entry))
            except (ValueError, OSError, IndexError):
                continue
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass  # (a backend that ended in between)

    def cleanup(self):
        self.signal(signal.SIGCONT)
        subprocess.run([os.path.join(pg.ROOT, "scripts", "pg-cluster.sh"), "stop", self.dir],
                       capture_output=True)
        shutil.rmtree(self.top, ignore_errors=True)


@test
def a_database_restart_in_the_middle_of_a_workload_loses_nothing():
    """The server stops while instances run and checkpoint: the daemon answers 503 and reports
    itself degraded, its instances keep running (their calls wait), a program that dies
    meanwhile has its end recorded once the server is back, every other instance completes with
    each step run once, and the health is ok again."""
    c = Cluster()
    d = Daemon(env={"RUNTARA_DATABASE_URL": c.url}).start()
    try:
        img = image(d)
        ids = [f"f{i}" for i in range(4)]
        for iid in ids + ["dies"]:
            start(d, img, iid, name=iid, steps=12, step_ms=150)
        wait_until(lambda: all(len(steps_log(d, i)) >= 2 for i in ids + ["dies"]),
                   "every instance to run")
        shim = shim_pid(d, "dies")
        with open(f"/proc/{shim}/task/{shim}/children") as f:
            program = int(f.read().split()[0])
        c.run("stop")
        os.kill(program, signal.SIGKILL)  # its end comes while the store is down
        r = d.request("GET", "/api/v1/health")
        assert r.status == 503 and r.json()["status"] == "degraded", r
        assert r.json()["store"]["status"] == "unavailable", r.json()
        r = d.request("GET", f"/api/v1/instances/{ids[0]}")
        assert r.status == 503 and r.json()["error"]["code"] == "unavailable", r
        time.sleep(1)  # the instances go on; their checkpoints wait for the server
        c.run("start")
        # the daemon reconnects within its backoff (at most 5 s after the server is back)
        wait_until(lambda: d.request("GET", "/api/v1/health").status == 200, "a healthy daemon",
                   timeout=30)
        for iid in ids:
            inst = wait(d, iid, timeout=60)
            assert inst["status"] == "completed", inst
            assert inst["attempt"] == 1 and inst["output"]["attempts"] == [1] * 12, inst
            assert steps_log(d, iid) == [f"step {k}" for k in range(1, 13)], steps_log(d, iid)
        # every end is recorded, the ones that came while the server was down included
        wait_until(lambda: all(d.request("GET", f"/api/v1/instances/{i}").json()["exit_code"]
                               == 0 for i in ids), "the exit codes")
        dead = wait(d, "dies", timeout=60)
        assert (dead["status"], dead["exit_code"]) == ("failed", 137), dead
        for iid in ids + ["dies"]:
            assert [e["type"] for e in events(d, iid)].count("exited") == 1, events(d, iid)
        r = d.request("GET", "/api/v1/health")
        assert r.status == 200 and r.json()["status"] == "ok", r
    finally:
        d.cleanup()
        c.cleanup()


def program_pid(d, iid):
    shim = shim_pid(d, iid)
    with open(f"/proc/{shim}/task/{shim}/children") as f:
        return int(f.read().split()[0])


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read)
        return True


@test
def a_server_that_stops_answering_is_given_up_on_within_the_deadline():
    """The server stops answering without closing a connection (every process of it frozen with
    SIGSTOP, as on a frozen machine). With RUNTARA_DATABASE_TIMEOUT_SECS=2 the daemon gives up
    each connection within the deadline instead of waiting forever: requests are answered 503
    and health says degraded, and its event loop goes on, so an instance that reaches its timeout
    meanwhile is killed on time. Once the server answers again, the daemon reconnects, the other
    instance completes with each step run once, and the killed one's end is recorded."""
    c = Cluster()
    d = Daemon(env={"RUNTARA_DATABASE_URL": c.url, "RUNTARA_DATABASE_TIMEOUT_SECS": "2",
                    "RUNTARA_STOP_GRACE_SECS": "1"}).start()
    try:
        img = image(d)
        start(d, img, "goes-on", steps=8, step_ms=200)
        r = d.request("POST", "/api/v1/instances",
                      json_body={"image_id": img, "instance_id": "overdue", "timeout_secs": 4,
                                 "input": {"steps": 200, "step_ms": 200}})
        assert r.status == 201, r
        wait_until(lambda: steps_log(d, "overdue") and steps_log(d, "goes-on"),
                   "both instances to run")
        program = program_pid(d, "overdue")
        c.signal(signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            # the first call waits out the deadline (2 s), never forever
            r = d.request("GET", "/api/v1/health")
            assert r.status == 503 and r.json()["status"] == "degraded", r
            # then the server is taken for hung: calls fail at once, on every connection
            for path in ("/api/v1/instances/goes-on", "/api/v1/health", "/api/v1/instances"):
                t0 = time.monotonic()
                r = d.request("GET", path)
                assert r.status == 503, (path, r)
                assert time.monotonic() - t0 < 1.0 * time_scale(), (path, time.monotonic() - t0)
            assert r.json()["error"]["code"] == "unavailable", r.json()
            assert "calls fail at once until it answers again" in r.json()["error"]["message"]
            # the timeout (4 s from the launch) and its grace (1 s) act while the server is still
            # frozen, late by one deadline at most: the event loop does not wait on the server
            wait_until(lambda: gone(program), "the overdue program to be killed", timeout=40)
            assert time.monotonic() - frozen < 9 * time_scale(), time.monotonic() - frozen
        finally:
            c.signal(signal.SIGCONT)
        wait_until(lambda: d.request("GET", "/api/v1/health").status == 200, "a healthy daemon",
                   timeout=30)
        done = wait(d, "goes-on", timeout=60)
        assert done["status"] == "completed", done
        assert steps_log(d, "goes-on") == [f"step {k}" for k in range(1, 9)], \
            steps_log(d, "goes-on")
        overdue = wait(d, "overdue", timeout=60)
        assert (overdue["status"], overdue["termination_reason"]) == ("failed", "timeout"), \
            overdue
        logs = d.logs()
        assert "PostgreSQL did not answer within 2000 ms" in logs, logs[-3000:]
        assert "PostgreSQL answers again" in logs, logs[-3000:]
    finally:
        d.cleanup()
        c.cleanup()



@test
def an_idle_daemons_event_loop_never_waits_on_a_frozen_server():
    """The lease is renewed by a thread of its own: with the server frozen for 8 s, an idle
    daemon's event loop still pings systemd's watchdog at its pace (WATCHDOG_USEC, 0.4 s),
    where a renewal on the loop would have held it for as long as the freeze."""
    c = Cluster()
    d = Daemon(env={"RUNTARA_DATABASE_URL": c.url, "RUNTARA_LEASE_SECS": "2",
                    "WATCHDOG_USEC": "400000"})
    path = os.path.join(d.tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    d.env["NOTIFY_SOCKET"] = path
    try:
        d.start()
        pings = []

        def collect(secs):
            end = time.monotonic() + secs
            while time.monotonic() < end:
                sock.settimeout(max(0.01, end - time.monotonic()))
                try:
                    if b"WATCHDOG=1" in sock.recv(4096):
                        pings.append(time.monotonic())
                except socket.timeout:
                    pass
        collect(1)
        c.signal(signal.SIGSTOP)
        try:
            del pings[:]
            collect(8)
        finally:
            c.signal(signal.SIGCONT)
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert len(pings) > 10 and max(gaps) < 2 * time_scale(), (len(pings), max(gaps or [0]))
        wait_until(lambda: d.request("GET", "/api/v1/health").status == 200, "a healthy daemon",
                   timeout=30)
        # and the lease is renewed again once the server answers
        wait_until(lambda: pg.psql(c.url, "SELECT count(*) FROM daemons WHERE lease_until > "
                                          "now() + interval '1 second'") == "1",
                   "a renewed lease", timeout=30)
    finally:
        sock.close()
        d.cleanup()
        c.cleanup()

if __name__ == "__main__":
    main()
