"""Start latency, native runner.

Measured: POST /api/v1/instances → the instance's POST /register, one start at a time, from the
daemon's own timestamps in the store (instances.created_at, and the created_at of the
"registered" event). The program is bench-probe, which registers and exits. Reported beside it:
the same for e2e-workflow, a program on libruntara (runtara_open() registers), so the figure
includes what the SDK adds to a program's start (loading its libraries, reading its variables).

Baseline: posix_spawn of the same binary → its first syscall (it prints CLOCK_REALTIME), by
spawn-baseline, in the same run, at the pace of the daemon's starts (a spawn every mean interval
between two of them): spawns back to back find the CPUs warm from the one before and run ~0.5 ms
faster on the reference guest than spawns spaced like the starts. The three series run in rounds
in turn (the probe's starts, the SDK program's, the baseline's spawns), so that each sees the
machine of the same seconds: on a shared guest, a baseline measured after all the starts was
0.4 ms off in either direction from run to run. The difference is what the daemon adds: the
store writes, the job queue to the event loop, runtara-shim, the register call (on the
connection the shim made ahead) and the process start slowed by the row's fdatasync beside it."""
import os
import sqlite3
import subprocess
import time

from benchlib import Row, overhead_at_most, register_latencies, start_and_wait

ORDER = 10


def spawns(ctx, probe, n, interval_us):
    """posix_spawn → first syscall of probe, n times, a spawn every interval_us at most (ms)."""
    out = subprocess.run([ctx.tool("spawn-baseline"), probe, str(n), str(interval_us)],
                         capture_output=True, text=True, check=True).stdout
    return [int(x) / 1000 for x in out.split()]


def run(ctx):
    n = ctx.pick(60, 300)
    rounds = ctx.pick(3, 10)
    per = n // rounds
    assert per * rounds == n, (n, rounds)
    probe = ctx.tool("bench-probe")
    base, gaps = [], []
    # Rounds of each in turn (the probe's starts, the SDK program's, the baseline's spawns at the
    # pace of the probe's), so that all three see the machine as it is in the same seconds.
    with ctx.daemon() as d:
        imgs = {}
        for name, path in (("probe", probe), ("sdk", ctx.tool("e2e-workflow"))):
            with open(path, "rb") as f:
                imgs[name] = d.upload("bench", name, f.read(),
                                      extra="&runner_type=native").json()["image_id"]
        for r in range(rounds):
            t0 = time.monotonic()
            for i in range(per):
                start_and_wait(d, imgs["probe"], f"p{r}-{i}")
            gaps.append((time.monotonic() - t0) / per * 1e6)
            for i in range(per):
                start_and_wait(d, imgs["sdk"], f"k{r}-{i}")
            base += spawns(ctx, probe, per, int(gaps[-1]))
        d.stop()  # the daemon holds its database alone
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        lat, sdk = register_latencies(db, "p"), register_latencies(db, "k")
        db.close()
    assert len(lat) == len(sdk) == len(base) == n, (len(lat), len(sdk), len(base))
    interval = sorted(gaps)[len(gaps) // 2]
    ctx.log(f"daemon: {rounds} rounds of {per} starts of the probe, {per} of an SDK program and "
            f"{per} baseline spawns at the probe's pace (one every {interval / 1000:.1f} ms)")
    tight = spawns(ctx, probe, n, 0)
    ctx.log(f"baseline: {n} spawns back to back")
    s = ctx.cdf("POST start → register (daemon)", lat)
    k = ctx.cdf("POST start → register, SDK program (daemon)", sdk)
    b = ctx.cdf("posix_spawn → first syscall, at the daemon's pace (baseline)", base,
                baseline=True)
    t = ctx.cdf("posix_spawn → first syscall, back to back", tight, baseline=True)
    ctx.note(f"{rounds} rounds of {per} sequential starts of the probe, {per} of the SDK program "
             f"and {per} baseline spawns at the probe's pace (one every {interval / 1000:.1f} "
             "ms); overhead = daemon percentile − baseline percentile; the SDK program's rows "
             "count its own start-up too (same baseline)")
    return [Row("start → register p50", s["p50"], "ms", b["p50"], [overhead_at_most(1)]),
            Row("start → register p99", s["p99"], "ms", b["p99"], [overhead_at_most(3)]),
            Row("start → register p50, SDK program", k["p50"], "ms", b["p50"]),
            Row("start → register p99, SDK program", k["p99"], "ms", b["p99"]),
            Row("spawn p50, back to back (not the baseline)", t["p50"], "ms", b["p50"])]
