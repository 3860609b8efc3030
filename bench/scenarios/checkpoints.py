"""Durable checkpoints, SQLite store.

Measured: 64 instances of bench-probe (native runner) each save N checkpoints of 100 bytes, one
after another on one keep-alive connection to the instance API. They all start saving at the
same moment (a FIFO barrier opened before they register and closed once all 64 have registered),
so the daemon sees 64 concurrent writers from the first save to the last. Rate: checkpoints in
the store / (last checkpoint's time − the barrier's release); latency: each save as the probe
timed it (request written → reply read).

Baseline: one sqlite3 connection in this process doing INSERT + COMMIT per row of 100 bytes,
journal_mode=WAL and synchronous=FULL (the store's durability), for a few seconds: what one
durable commit per checkpoint costs on this disk, without batching.

Also reported, as the ceiling of this machine: the HTTP floor. The same 64 probes, started the
same way (barrier, keep-alive connection, 100-byte PUTs), against bare-server on a unix socket:
libmicrohttpd with the instance API's flags and thread count answering 201 at once, with no
store behind it. No daemon that speaks HTTP on this machine can save faster than this."""
import os
import sqlite3
import subprocess
import tempfile
import time

from benchlib import Row, at_least, at_most, ratio_at_least, wait_until

ORDER = 20
INSTANCES = 64


def start_all(d, img, per, barrier):
    for i in range(INSTANCES):
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": f"c{i}",
            "env": {"BENCH_CHECKPOINTS": str(per), "BENCH_BARRIER": barrier}})
        assert r.status == 201, r


def all_registered(d):
    return all(d.request("GET", f"/api/v1/instances/c{i}/events?type=registered").json()["events"]
               for i in range(INSTANCES))


def daemon_run(ctx, per, count=None, **env):
    """The daemon's rate and latencies; count(d) is (checkpoints, last created_at in epoch usec)
    read from its store after it stopped (default: its SQLite file)."""
    with ctx.daemon(**env) as d:
        with open(ctx.tool("bench-probe"), "rb") as f:
            img = d.upload("bench", "probe", f.read(), extra="&runner_type=native").json()
        barrier = os.path.join(d.tmp, "barrier")
        os.mkfifo(barrier)
        hold = os.open(barrier, os.O_RDWR)  # a writer, so the probes' opens do not block
        try:
            start_all(d, img["image_id"], per, barrier)
            wait_until(lambda: all_registered(d), 60, "every instance to register")
        finally:
            released = time.time()
            os.close(hold)  # end-of-file for every probe: go
        for i in range(INSTANCES):
            while d.request("GET", f"/api/v1/instances/c{i}?wait=30s").json()["status"] in \
                    ("pending", "running"):
                pass
        lat = []
        for i in range(INSTANCES):
            with open(os.path.join(d.data_dir, "tenants", "bench", "runs", f"c{i}", "lat.txt")) as f:
                lat += [int(x) / 1000 for x in f]
        d.stop()  # the daemon holds its database alone
        n, last = (count or sqlite_count)(d)
    assert n == INSTANCES * per and len(lat) == n, (n, len(lat))
    return n / (last / 1e6 - released), lat


def sqlite_count(d):
    db = sqlite3.connect(f"file:{d.data_dir}/runtara.db?mode=ro", uri=True)
    n, last = db.execute("SELECT COUNT(*), MAX(created_at) FROM checkpoints").fetchone()
    db.close()
    return n, last


def http_floor(ctx, per):
    """The probes against bare-server: (rate, latencies in ms)."""
    with tempfile.TemporaryDirectory(prefix="runtara-bench-") as tmp:
        sock, barrier = os.path.join(tmp, "core.sock"), os.path.join(tmp, "barrier")
        os.mkfifo(barrier)
        with ctx.bare_server(b"x" * 100, unix_path=sock):
            hold = os.open(barrier, os.O_RDWR)
            procs = []
            try:
                for i in range(INSTANCES):
                    cwd = os.path.join(tmp, f"c{i}")
                    os.mkdir(cwd)
                    env = {"RUNTARA_SERVER_ADDR": f"unix:{sock}", "RUNTARA_INSTANCE_ID": f"c{i}",
                           "RUNTARA_INSTANCE_TOKEN": "floor", "BENCH_CHECKPOINTS": str(per),
                           "BENCH_BARRIER": barrier, "BENCH_SAY_READY": "1"}
                    procs.append(subprocess.Popen([ctx.tool("bench-probe")], cwd=cwd, env=env,
                                                  stdout=subprocess.PIPE, text=True))
                for p in procs:  # each has registered
                    assert p.stdout.readline() == "ready\n", "a probe failed to register"
            finally:
                released = time.monotonic()
                os.close(hold)
            codes = [p.wait(120) for p in procs]
            took = time.monotonic() - released
            for p in procs:
                p.stdout.close()
        assert codes == [0] * INSTANCES, codes
        lat = []
        for i in range(INSTANCES):
            with open(os.path.join(tmp, f"c{i}", "lat.txt")) as f:
                lat += [int(x) / 1000 for x in f]
    assert len(lat) == INSTANCES * per, len(lat)
    return len(lat) / took, lat


def sqlite_baseline(seconds):
    with tempfile.TemporaryDirectory(prefix="runtara-bench-") as tmp:
        db = sqlite3.connect(os.path.join(tmp, "b.db"), isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, k TEXT, data BLOB)")
        data, lat = b"x" * 100, []
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            t = time.monotonic()
            db.execute("BEGIN")
            db.execute("INSERT INTO c (k, data) VALUES (?, ?)", (f"k{len(lat)}", data))
            db.execute("COMMIT")
            lat.append((time.monotonic() - t) * 1000)
        rate = len(lat) / (time.monotonic() - t0)
        db.close()
    return rate, lat


def run(ctx):
    per = ctx.pick(60, 300)
    rate, lat = daemon_run(ctx, per)
    ctx.log(f"daemon: {INSTANCES} x {per} checkpoints")
    brate, blat = sqlite_baseline(ctx.pick(3, 6))
    ctx.log(f"baseline: {len(blat)} commits")
    frate, flat = http_floor(ctx, per)
    ctx.log(f"HTTP floor: {frate:,.0f} PUTs/s")
    s = ctx.cdf(f"checkpoint save, {INSTANCES} concurrent (daemon)", lat)
    b = ctx.cdf("INSERT + COMMIT, 1 connection (baseline)", blat, baseline=True)
    f = ctx.cdf(f"PUT answered by bare libmicrohttpd, {INSTANCES} concurrent (HTTP floor)", flat)
    ctx.note(f"{INSTANCES} instances x {per} checkpoints of 100 B; baseline: 1 connection, "
             "WAL, synchronous=FULL; HTTP floor: the same probes against bare-server on a unix "
             "socket (ratio: daemon / floor)")
    return [Row("durable checkpoints/s", rate, "/s", brate,
                [at_least(20000), ratio_at_least(10)]),
            Row("checkpoint p50", s["p50"], "ms", b["p50"]),
            Row("checkpoint p99", s["p99"], "ms", b["p99"], [at_most(5)]),
            Row("HTTP floor: PUTs/s", rate, "/s", frate),
            Row("HTTP floor: PUT p99", s["p99"], "ms", f["p99"])]
