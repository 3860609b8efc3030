"""End to end: a 10-step SDK workflow.

Measured: e2e-workflow (bench/e2e-workflow.c), a program on libruntara that opens its client,
runs 10 steps with runtara_step() (each a 4 KiB checksum whose result, ~40 bytes of JSON, is
saved as a durable checkpoint) and completes with runtara_complete(). 32 client threads each
start an instance (POST /api/v1/instances, native runner) and long-poll its status until it has
completed, then start the next, for a fixed time. Workflows/s: completed / elapsed; latency:
POST start → the long-poll answering "completed", as the client sees it. Then the same one
workflow at a time. For both, the CPU each workflow cost, by party: the daemon, the shims and
programs it reaped, the load generator, and the whole machine.

Baseline: the same 10 steps, results and checksums as a plain loop in one process (e2e-workflow
plain N): the work itself, without processes, the daemon or durability. The ratio is what
running each workflow as a durable, isolated instance costs.

Also reported, the floor of a process per workflow (benchlib.run_floor): the same program started
with posix_spawn and its 12 instance-API requests answered at once by bare-server, with no
daemon, shim, store or durability: the most any daemon of this design could reach here, and the
least CPU per workflow it could spend."""
import glob
import subprocess

from benchlib import CpuSplit, Row, at_most, run_floor, run_workflows

ORDER = 50
CONCURRENCY = 32


def instance_api_requests(d):
    """The requests the daemon has served on the instance API (its core.* routes), from
    runtara_http_requests_total."""
    total = 0
    for line in d.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith('runtara_http_requests_total{route="core.'):
            total += int(line.rsplit(" ", 1)[1])
    return total


def context_switches(pid):
    """The context switches of the daemon's threads so far, voluntary and not (from
    /proc/<pid>/task/*/status; a thread that ended meanwhile is not counted)."""
    total = 0
    for task in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(task) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key.endswith("ctxt_switches"):
                        total += int(value)
        except OSError:
            pass
    return total


def daemon_run(ctx, seconds, serial_seconds=0):
    """The load at CONCURRENCY, then (serial_seconds > 0) one workflow at a time, on one daemon.
    Returns (workflows/s, latencies, CPU split, (instance-API requests, daemon context switches)
    per workflow) for the first and (latencies, CPU split) for the second (None without it)."""
    with ctx.daemon() as d:
        with open(ctx.tool("e2e-workflow"), "rb") as f:
            img = d.upload("bench", "e2e", f.read(), extra="&runner_type=native").json()
        before, switched = instance_api_requests(d), context_switches(d.proc.pid)
        cpu = CpuSplit(d.proc.pid).start()
        n, elapsed, lat = run_workflows(d, img["image_id"], seconds, CONCURRENCY)
        cpu.stop()
        counts = ((instance_api_requests(d) - before) / n,
                  (context_switches(d.proc.pid) - switched) / n)
        serial = None
        if serial_seconds:
            scpu = CpuSplit(d.proc.pid).start()
            _, _, slat = run_workflows(d, img["image_id"], serial_seconds, 1, prefix="s")
            serial = (slat, scpu.stop())
    return n / elapsed, lat, cpu, counts, serial


def cpu_rows(label, cpu, n):
    """CPU per workflow by party (CpuSplit), with the targets of the whole-workflow issue for the
    machine (<= 3 ms) and the daemon (<= 1 ms)."""
    return [Row(f"{label}: CPU/workflow, whole machine", cpu.machine / n, "ms",
                targets=[at_most(3.0)]),
            Row(f"{label}: CPU/workflow, daemon", cpu.daemon / n, "ms", targets=[at_most(1.0)]),
            Row(f"{label}: CPU/workflow, shims + programs", cpu.children / n, "ms"),
            Row(f"{label}: CPU/workflow, load generator", cpu.loadgen / n, "ms")]


def run(ctx):
    seconds = ctx.pick(8, 25)
    rate, lat, cpu, counts, (slat, scpu) = daemon_run(ctx, seconds, serial_seconds=ctx.pick(3, 8))
    ctx.log(f"daemon: {len(lat)} workflows, {rate:.0f}/s; then {len(slat)} one at a time")
    n = ctx.pick(2000, 10000)
    out = subprocess.run([ctx.tool("e2e-workflow"), "plain", str(n)], capture_output=True,
                         text=True, check=True).stdout
    base = [int(x) / 1e6 for x in out.split()]
    brate = len(base) / (sum(base) / 1000)
    fn, fel, flat, fcpu, fprograms = run_floor(ctx, ctx.pick(3, 8), CONCURRENCY)
    _, _, fslat, _, _ = run_floor(ctx, ctx.pick(2, 4), 1, prefix="g")
    ctx.log(f"floor: {fn / fel:.0f}/s, {fcpu.machine / fn:.2f} ms of machine CPU per workflow")
    s = ctx.cdf(f"start → completed, {CONCURRENCY} concurrent (daemon)", lat)
    one = ctx.cdf("start → completed, one at a time (daemon)", slat)
    b = ctx.cdf("same steps, plain loop (baseline)", base, baseline=True)
    f = ctx.cdf(f"floor: process + bare HTTP, {CONCURRENCY} concurrent", flat)
    f1 = ctx.cdf("floor: process + bare HTTP, one at a time", fslat)
    ctx.note(f"{CONCURRENCY} concurrent clients for {seconds} s, {len(lat)} workflows of 10 "
             f"steps, then {len(slat)} one at a time; baseline: {n} plain loops in one process. "
             "CPU per workflow: /proc/stat for the machine, /proc/<daemon>/stat for the daemon "
             "and the shims and programs it reaped, getrusage for the load generator. "
             "Instance API requests from runtara_http_requests_total, context switches from "
             "/proc/<daemon>/task/*/status. Floor: the program started with posix_spawn, "
             "answered by bare-server on a unix socket, reaped with wait4")
    return [Row("workflows/s", rate, "/s", brate),
            Row("workflow p50", s["p50"], "ms", b["p50"]),
            Row("workflow p99", s["p99"], "ms", b["p99"]),
            Row("one at a time: workflow p50", one["p50"], "ms", b["p50"],
                targets=[at_most(5.0)]),
            Row("one at a time: workflow p99", one["p99"], "ms", b["p99"]),
            # counts, not times: they show a change in the protocol or in the daemon's wake-ups
            # where the timings drown in a noisy host's drift
            Row("instance API requests/workflow", counts[0], ""),
            Row(f"{CONCURRENCY} in flight: daemon context switches/workflow", counts[1], "")] + \
        cpu_rows(f"{CONCURRENCY} in flight", cpu, len(lat)) + \
        cpu_rows("one at a time", scpu, len(slat)) + [
            # no daemon at all: what the design costs before the daemon does anything
            Row(f"floor: workflows/s, {CONCURRENCY} in flight", fn / fel, "/s"),
            Row(f"floor: workflow p50, {CONCURRENCY} in flight", f["p50"], "ms"),
            Row("floor: workflow p50, one at a time", f1["p50"], "ms"),
            Row(f"floor: CPU/workflow, whole machine, {CONCURRENCY} in flight",
                fcpu.machine / fn, "ms"),
            Row("floor: CPU/workflow, bare-server", fcpu.daemon / fn, "ms"),
            Row("floor: CPU/workflow, programs", fprograms / fn, "ms")]
