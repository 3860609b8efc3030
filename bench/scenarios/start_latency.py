"""Start latency, native runner.

Measured: POST /api/v1/instances → the instance's POST /register, one start at a time, from the
daemon's own timestamps in the store (instances.created_at, and the created_at of the
"registered" event). The program is bench-probe, which registers and exits. Reported beside it:
the same for e2e-workflow, a program on libruntara (runtara_open() registers), so the figure
includes what the SDK adds to a program's start (loading its libraries, reading its variables).

Baseline: posix_spawn of the same binary → its first syscall (it prints CLOCK_REALTIME), by
spawn-baseline, in the same run, at the pace of the daemon's starts (a spawn every median
interval between two of them): spawns back to back find the CPUs warm from the one before and
run ~0.5 ms faster on the reference guest than spawns spaced like the starts. The difference is
what the daemon adds: the store writes, the job queue to the event loop, runtara-shim, the
unix-socket connection and the register call."""
import os
import sqlite3
import subprocess
import time

from benchlib import Row, overhead_at_most

ORDER = 10


def daemon_latencies(ctx, program, n):
    with ctx.daemon() as d:
        with open(program, "rb") as f:
            img = d.upload("bench", "probe", f.read(), extra="&runner_type=native").json()
        for i in range(n):
            r = d.request("POST", "/api/v1/instances",
                          json_body={"image_id": img["image_id"], "instance_id": f"s{i}"})
            assert r.status == 201, r
            assert d.request("GET", f"/api/v1/instances/s{i}?wait=10s").status == 200
            # and its exit recorded (after a program's own completion report, the process's
            # exit is still to come): the next start must not share the machine with it
            deadline = time.monotonic() + 10
            while d.request("GET", f"/api/v1/instances/s{i}").json()["exit_code"] is None:
                assert time.monotonic() < deadline, f"s{i} did not exit"
                time.sleep(0.001)
        d.stop()  # the daemon holds its database alone
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        rows = db.execute("SELECT i.created_at, e.created_at FROM instances i JOIN events e "
                          "ON e.instance_id = i.instance_id AND e.type = 'registered' "
                          "ORDER BY i.created_at").fetchall()
        db.close()
    assert len(rows) == n, (len(rows), n)
    gaps = sorted(b[0] - a[0] for a, b in zip(rows, rows[1:]))
    return [(reg - created) / 1000 for created, reg in rows], gaps[len(gaps) // 2]


def spawns(ctx, probe, n, interval_us):
    """posix_spawn → first syscall of probe, n times, a spawn every interval_us at most (ms)."""
    out = subprocess.run([ctx.tool("spawn-baseline"), probe, str(n), str(interval_us)],
                         capture_output=True, text=True, check=True).stdout
    return [int(x) / 1000 for x in out.split()]


def run(ctx):
    n = ctx.pick(60, 300)
    probe = ctx.tool("bench-probe")
    lat, interval = daemon_latencies(ctx, probe, n)
    ctx.log(f"daemon: {n} starts, one every {interval / 1000:.1f} ms (median)")
    sdk, _ = daemon_latencies(ctx, ctx.tool("e2e-workflow"), n)
    ctx.log(f"daemon: {n} starts of an SDK program")
    base = spawns(ctx, probe, n, interval)
    ctx.log(f"baseline: {n} spawns at the same pace")
    tight = spawns(ctx, probe, n, 0)
    ctx.log(f"baseline: {n} spawns back to back")
    s = ctx.cdf("POST start → register (daemon)", lat)
    k = ctx.cdf("POST start → register, SDK program (daemon)", sdk)
    b = ctx.cdf("posix_spawn → first syscall, at the daemon's pace (baseline)", base,
                baseline=True)
    t = ctx.cdf("posix_spawn → first syscall, back to back", tight, baseline=True)
    ctx.note(f"{n} sequential starts, one every {interval / 1000:.1f} ms, and the baseline's "
             "spawns at that pace; overhead = daemon percentile − baseline percentile; the SDK "
             "program's rows count its own start-up too (same baseline)")
    return [Row("start → register p50", s["p50"], "ms", b["p50"], [overhead_at_most(1)]),
            Row("start → register p99", s["p99"], "ms", b["p99"], [overhead_at_most(3)]),
            Row("start → register p50, SDK program", k["p50"], "ms", b["p50"]),
            Row("start → register p99, SDK program", k["p99"], "ms", b["p99"]),
            Row("spawn p50, back to back (not the baseline)", t["p50"], "ms", b["p50"])]
