"""End to end: a 10-step SDK workflow.

Measured: e2e-workflow (bench/e2e-workflow.c), a program on libruntara that opens its client,
runs 10 steps with runtara_step() (each a 4 KiB checksum whose result, ~40 bytes of JSON, is
saved as a durable checkpoint) and completes with runtara_complete(). 32 client threads each
start an instance (POST /api/v1/instances, native runner) and long-poll its status until it has
completed, then start the next, for a fixed time. Workflows/s: completed / elapsed; latency:
POST start → the long-poll answering "completed", as the client sees it.

Baseline: the same 10 steps, results and checksums as a plain loop in one process (e2e-workflow
plain N): the work itself, without processes, the daemon or durability. The ratio is what
running each workflow as a durable, isolated instance costs."""
import subprocess

from benchlib import Row, run_workflows

ORDER = 50
CONCURRENCY = 32


def daemon_run(ctx, seconds):
    with ctx.daemon() as d:
        with open(ctx.tool("e2e-workflow"), "rb") as f:
            img = d.upload("bench", "e2e", f.read(), extra="&runner_type=native").json()
        n, elapsed, lat = run_workflows(d, img["image_id"], seconds, CONCURRENCY)
    return n / elapsed, lat


def run(ctx):
    seconds = ctx.pick(8, 25)
    rate, lat = daemon_run(ctx, seconds)
    ctx.log(f"daemon: {len(lat)} workflows, {rate:.0f}/s")
    n = ctx.pick(2000, 10000)
    out = subprocess.run([ctx.tool("e2e-workflow"), "plain", str(n)], capture_output=True,
                         text=True, check=True).stdout
    base = [int(x) / 1e6 for x in out.split()]
    brate = len(base) / (sum(base) / 1000)
    s = ctx.cdf(f"start → completed, {CONCURRENCY} concurrent (daemon)", lat)
    b = ctx.cdf("same steps, plain loop (baseline)", base, baseline=True)
    ctx.note(f"{CONCURRENCY} concurrent clients for {seconds} s, {len(lat)} workflows of 10 "
             f"steps; baseline: {n} plain loops in one process")
    return [Row("workflows/s", rate, "/s", brate),
            Row("workflow p50", s["p50"], "ms", b["p50"]),
            Row("workflow p99", s["p99"], "ms", b["p99"])]
