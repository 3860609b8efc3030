"""OCI runner: container starts and workflows, crun and runc.

For each runtime (crun, then runc: a daemon each, RUNTARA_OCI_RUNTIME) the scenario measures two
things, each against a baseline taken in the same run.

Start latency. Measured: POST /api/v1/instances → the instance's POST /register, one start at a
time, from the daemon's own timestamps in the store (instances.created_at and the "registered"
event's), as start_latency.py measures the native runner. The image is bench-probe-static
(bench/probe.c linked statically: a container's root holds nothing but the program) with
runner_type=oci. Baseline: the bare runtime running the same container, `crun run` (`runc run`),
timed by oci-baseline (bench/oci-baseline.c) from the runtime's invocation to the program's first
action (the probe, with BENCH_STAMP=1, prints CLOCK_REALTIME and exits). Its bundle is the
daemon's: the image's rootfs the daemon built (DATA_DIR/bundles/<image_id>/rootfs) and a
config.json made by the OCI runner's own runner__oci_prepare() with the daemon's default limits
(before the clock starts). The daemon's starts and the bare runs go in rounds in turn, the bare
runs at the pace of the daemon's starts, so that both see the machine of the same seconds. The
difference is what the daemon adds: the store writes, the hand-over to runtara-shim (which runs
the runtime once, `run --detach`, as the bare run does), and the register call over the instance
API. Target: the daemon's p50 at most 15 % over the bare runtime's.
Reported beside it: the bare runtime driven as the shim drove it until 50aab04 (`create`, waited
for, then `start`; oci-baseline create-start), in the same rounds: what a second invocation costs.

Workflows. Measured: the 10-step SDK workflow of end_to_end.py (bench/e2e-workflow.c), linked
statically (e2e-workflow-static), under the same client load (benchlib.run_workflows: 32 clients,
each starting an instance and long-polling it to completion), on the OCI runner. Baseline: the
same program and load on the native runner of the same daemon, in alternating halves of the
same seconds. Target: OCI ≥ 0.5 × native workflows/s.

The CPU limit is left at its default (RUNTARA_OCI_CPU_MILLIS=500: 50 ms per 100 ms period per
container), because that is what every OCI launch gets, and because it does not bind here: a
workflow's container uses about 3 ms of CPU in its whole life with crun, 15-25 ms with runc (whose
`runc init` runs in the container's cgroup): its cgroup's usage, from the "exited" events, is in
the notes. A quota that throttles only after 50 ms within one period never touches it; lifting it
would measure a configuration nobody runs and change nothing else.

Skipped, with a line saying why, for a runtime that cannot run containers here: not root, the
runtime not installed, or the daemon's own start-up check (runtara-oci-check in a container)
failing."""
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

from benchlib import Row, pct, ratio_at_least, ratio_at_most, register_latencies, run_workflows
from benchlib import start_and_wait

ORDER = 60
RUNTIMES = ("crun", "runc")
CONCURRENCY = 32


def skip(ctx, runtime, why):
    msg = f"SKIPPED {runtime}: {why}"
    print(f"oci: {msg}", flush=True)
    ctx.log(msg)
    ctx.note(msg)


def cannot_run(runtime):
    """Why runtime cannot run containers here before a daemon is even tried, or None."""
    if os.geteuid() != 0:
        return "not root (the OCI runner's containers need root here)"
    if not shutil.which(runtime):
        return f"{runtime} is not installed"
    return None


def bare_runs(ctx, runtime, work, bundles, image_id, n, interval_us, mode="run"):
    """n runs of the bare runtime (oci-baseline; mode "run", or "create-start" as runtara-shim
    drives it): the first invocation → the probe's stamp, in ms."""
    limits = [ctx.daemon_default(k) for k in ("RUNTARA_OCI_MEMORY_BYTES", "RUNTARA_OCI_CPU_MILLIS",
                                              "RUNTARA_OCI_PIDS_MAX",
                                              "RUNTARA_INSTANCE_OPEN_FILES")]
    p = subprocess.run([ctx.tool("oci-baseline"), runtime, work, bundles, image_id,
                        ctx.tool("bench-probe-static"), str(n), str(int(interval_us))] + limits
                       + [mode],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"oci-baseline {runtime} failed: {p.stderr.strip()}")
    return [int(x) / 1000 for x in p.stdout.split()]


def exited_cpu_ms(db, prefix):
    """CPU time (ms) of each ended launch of the instances whose ids start with prefix, from their
    "exited" events (the container's cgroup for the OCI runner)."""
    rows = db.execute("SELECT e.payload FROM events e JOIN instances i "
                      "ON e.instance_key = i.instance_key WHERE e.type = 'exited' "
                      "AND i.instance_id LIKE ?", (prefix + "%",)).fetchall()
    return sorted(json.loads(p)["cpu_usec"] / 1000 for (p,) in rows)


def measure(ctx, runtime):
    """The rows of one runtime, or [] (and a printed line) if it cannot run containers."""
    n = ctx.pick(60, 200)
    rounds = ctx.pick(3, 10)
    per = n // rounds
    halves = 2  # of the workflow load, per runner, alternating
    seconds = ctx.pick(8, 15)
    bare, split, gaps = [], [], []
    work = tempfile.mkdtemp(prefix="runtara-bench-oci-")
    try:
        with ctx.daemon(RUNTARA_OCI_RUNTIME=runtime) as d:
            logs = d.logs()
            if "the oci runner is not available" in logs:
                # a logfmt message: the rest of its line, its quoting undone
                why = logs.split("the oci runner is not available: ", 1)[1].split("\n", 1)[0]
                why = why.rstrip('"').replace('\\"', '"').replace("\\\\", "\\")
                skip(ctx, runtime, f"the daemon's check failed: {why}")
                return []
            imgs = {}
            for name, tool, runner in (("probe", "bench-probe-static", "oci"),
                                       ("e2e-oci", "e2e-workflow-static", "oci"),
                                       ("e2e-native", "e2e-workflow-static", "native")):
                with open(ctx.tool(tool), "rb") as f:
                    r = d.upload("bench", name, f.read(), extra=f"&runner_type={runner}")
                assert r.status == 201, r
                imgs[name] = r.json()["image_id"]
            bundles = os.path.join(d.data_dir, "bundles")
            # a first container of each kind, not counted: the rootfs is built, caches warmed
            start_and_wait(d, imgs["probe"], "warm")
            bare_runs(ctx, runtime, work, bundles, imgs["probe"], 1, 0)
            for r in range(rounds):
                t0 = time.monotonic()
                for i in range(per):
                    start_and_wait(d, imgs["probe"], f"o{r}-{i}")
                gaps.append((time.monotonic() - t0) / per * 1e6)
                bare += bare_runs(ctx, runtime, work, bundles, imgs["probe"], per, gaps[-1])
                split += bare_runs(ctx, runtime, work, bundles, imgs["probe"], per, gaps[-1],
                                   "create-start")
            ctx.log(f"{runtime}: {rounds} rounds of {per} daemon starts, {per} bare runs and "
                    f"{per} bare create + start")
            wf = {"oci": [0, 0.0, []], "native": [0, 0.0, []]}
            for h in range(halves):
                for runner, prefix in (("native", "n"), ("oci", "x")):
                    k, el, lat = run_workflows(d, imgs[f"e2e-{runner}"], seconds / halves,
                                               CONCURRENCY, prefix=f"{prefix}{h}-")
                    wf[runner][0] += k
                    wf[runner][1] += el
                    wf[runner][2] += lat
            d.stop()  # the daemon holds its database alone
            db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
            lat = register_latencies(db, "o")
            cpu = exited_cpu_ms(db, "x")
            db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert len(lat) == len(bare) == len(split) == per * rounds, (len(lat), len(bare), len(split))
    interval = sorted(gaps)[len(gaps) // 2]
    s = ctx.cdf(f"POST start → register, {runtime} (daemon)", lat)
    b = ctx.cdf(f"{runtime} run → first syscall (baseline)", bare, baseline=True)
    c = ctx.cdf(f"{runtime} create, start → first syscall (as the shim does it)", split,
                baseline=True)
    rate = {k: v[0] / v[1] for k, v in wf.items()}
    # (the workflows' latencies are not drawn: the plot is the starts')
    wo = {p: pct(wf["oci"][2], p) for p in (50, 99)}
    wn = {p: pct(wf["native"][2], p) for p in (50, 99)}
    print(f"oci: {runtime}: start → register p50 {s['p50']:.2f} ms (bare {b['p50']:.2f} ms, "
          f"×{s['p50'] / b['p50']:.2f}), p99 {s['p99']:.2f} ms (bare {b['p99']:.2f} ms); "
          f"workflows/s OCI {rate['oci']:.1f}, native {rate['native']:.1f} "
          f"(×{rate['oci'] / rate['native']:.2f})", flush=True)
    ctx.note(f"{runtime}: {rounds} rounds of {per} sequential daemon starts, {per} bare "
             f"`{runtime} run` and {per} bare `{runtime} create` + `start` at their pace (one every {interval / 1000:.1f} ms); workflows: "
             f"{CONCURRENCY} clients, {halves} × {seconds / halves:.0f} s on each runner in turn, "
             f"{wf['oci'][0]} OCI and {wf['native'][0]} native workflows; CPU per OCI workflow "
             f"container p50 {cpu[len(cpu) // 2]:.1f} ms, max {cpu[-1]:.1f} ms (its quota: 50 ms "
             "per 100 ms)")
    return [Row(f"start → register p50, {runtime}", s["p50"], "ms", b["p50"],
                [ratio_at_most(1.15)]),
            Row(f"start → register p99, {runtime}", s["p99"], "ms", b["p99"]),
            Row(f"bare create + start p50, {runtime} (not the baseline)", c["p50"], "ms",
                b["p50"]),
            Row(f"workflows/s, {runtime} (native baseline)", rate["oci"], "/s", rate["native"],
                [ratio_at_least(0.5)]),
            Row(f"workflow p50, {runtime}", wo[50], "ms", wn[50]),
            Row(f"workflow p99, {runtime}", wo[99], "ms", wn[99])]


def run(ctx):
    rows = []
    for runtime in RUNTIMES:
        why = cannot_run(runtime)
        if why:
            skip(ctx, runtime, why)
            continue
        rows += measure(ctx, runtime)
    if not rows:
        print("oci: no OCI runtime could run containers here: nothing measured", file=sys.stderr)
    return rows
