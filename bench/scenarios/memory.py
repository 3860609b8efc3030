"""Daemon memory (RSS).

Measured: VmRSS of the daemon process (/proc/PID/status) idle, one second after it answered its
first health check, and then while 1,000 instances run. The instances use the mock runner
(RUNTARA_RUNNER=mock, MOCK_DELAY_MS: each "runs" for minutes without a process), so the figure
is the daemon's own cost per running instance: its rows, timers, run directories' handles and
supervisor state, not that of 1,000 runtara-shim processes. RSS is sampled every 100 starts for
the plot.

Baseline: the VmRSS of bare-server (libmicrohttpd with the daemon's HTTP thread pool and a fixed
body), idle: what the libraries and threads of an HTTP server cost before any of our code.

Then 100,000 sleeping instances (QUICK: 20,000): suspended in durable sleeps due in a day, seeded
into the store of a stopped daemon, loaded into the wake heap when it starts again; per sleeper
is the RSS growth over the idle daemon, divided by their number. A sleeping instance holds no
process: only its heap entry (16 bytes and its id) remains in memory."""
import concurrent.futures
import time

from benchlib import Row, at_most, rss_kib, seed_sleepers, wait_until

ORDER = 40
RUNNING = 1000
STEP = 100


def bare_idle_kib(ctx):
    with ctx.bare_server(b'{"status": "ok"}') as (proc, _):
        time.sleep(1)
        return rss_kib(proc.pid)


def start_batch(d, img, first, n):
    def one(i):
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": f"m{i}", "timeout_secs": 3600,
            "env": {"MOCK_DELAY_MS": "1800000"}})
        assert r.status == 201, r
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(first, first + n)))


def running(d):
    return d.request("GET", "/api/v1/instances?status=running&limit=1").json()["total"]


def run(ctx):
    base = bare_idle_kib(ctx) / 1024
    ctx.log(f"bare-server idle: {base:.1f} MiB")
    with ctx.daemon(RUNTARA_RUNNER="mock") as d:
        time.sleep(1)
        idle = rss_kib(d.proc.pid) / 1024
        ctx.log(f"daemon idle: {idle:.1f} MiB")
        with open(ctx.tool("bench-probe"), "rb") as f:
            img = d.upload("bench", "probe", f.read(), extra="&runner_type=native").json()
        points = [(0, rss_kib(d.proc.pid) / 1024)]
        for first in range(0, RUNNING, STEP):
            start_batch(d, img["image_id"], first, STEP)
            wait_until(lambda: running(d) == first + STEP, 60, "the instances to run")
            points.append((first + STEP, rss_kib(d.proc.pid) / 1024))
        time.sleep(1)
        full = rss_kib(d.proc.pid) / 1024
        ctx.log(f"daemon with {RUNNING} running: {full:.1f} MiB")
    sleepers = ctx.pick(20_000, 100_000)
    with ctx.daemon(RUNTARA_RUNNER="mock", RUNTARA_RETENTION_SECS="0") as d:
        time.sleep(1)
        before = rss_kib(d.proc.pid)
        seed_sleepers(d, sleepers, int((time.time() + 86400) * 1e6), 3600 * 10**6)
        d.start()
        time.sleep(1)
        asleep = rss_kib(d.proc.pid)
    per_sleeper = (asleep - before) * 1024 / sleepers
    ctx.log(f"daemon with {sleepers} sleeping: {asleep / 1024:.1f} MiB")
    ctx.series("daemon", points, "running instances (mock runner)", "VmRSS (MiB)")
    ctx.series("bare-server, idle (baseline)", [(0, base), (RUNNING, base)], None, None,
               baseline=True)
    ctx.note(f"{RUNNING} instances on the mock runner; per instance: the slope of RSS from "
             f"{STEP} to {RUNNING} running (the first ones also warm caches)")
    per = (points[-1][1] - points[1][1]) * 1024 / (RUNNING - STEP)
    return [Row("RSS idle", idle, "MiB", base, [at_most(10)]),
            Row(f"RSS, {RUNNING} running instances", full, "MiB"),
            Row("RSS per running instance", per, "KiB"),
            Row(f"RSS, {sleepers:,} sleeping instances", asleep / 1024, "MiB"),
            Row("RSS per sleeping instance", per_sleeper, "B", None, [at_most(1024)])]
