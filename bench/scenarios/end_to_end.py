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
import threading
import time

from benchlib import Row

ORDER = 50
CONCURRENCY = 32
TERMINAL = ("completed", "failed", "cancelled", "suspended")


def client(d, img, worker, deadline, out):
    conn, k = d.conn(), 0
    while time.monotonic() < deadline:
        iid = f"e{worker}-{k}"
        k += 1
        t0 = time.monotonic()
        r = d.request("POST", "/api/v1/instances", conn=conn,
                      json_body={"image_id": img, "instance_id": iid})
        assert r.status == 201, r
        while True:
            st = d.request("GET", f"/api/v1/instances/{iid}?wait=30s", conn=conn).json()
            if st["status"] in TERMINAL:
                break
        assert st["status"] == "completed", st
        out.append((time.monotonic(), (time.monotonic() - t0) * 1000))
    conn.close()


def daemon_run(ctx, seconds):
    with ctx.daemon() as d:
        with open(ctx.tool("e2e-workflow"), "rb") as f:
            img = d.upload("bench", "e2e", f.read(), extra="&runner_type=native").json()
        done, threads = [], []
        t0 = time.monotonic()
        for w in range(CONCURRENCY):
            t = threading.Thread(target=client, args=(d, img["image_id"], w, t0 + seconds, done))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
    elapsed = max(t for t, _ in done) - t0
    return len(done) / elapsed, [ms for _, ms in done]


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
