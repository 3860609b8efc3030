"""Status API throughput.

Measured: GET /api/v1/instances/{id} of one finished instance, with wrk (Debian package wrk): 64
keep-alive connections, 2 threads, for a fixed time, after a one-second warm-up. The daemon runs
with its defaults (RUNTARA_HTTP_THREADS, log level info, so one access-log line per request) and
the mock runner (no process is needed to have an instance to read).

Baseline: bare-server, a libmicrohttpd server started with the daemon's flags, thread count and
limits, answering every request with the same bytes the daemon answered (same body, same
Content-Type). The difference is the daemon's own work per request: routing, auth, the store
read, JSON, metrics and the access log. A second daemon figure with the access log off
(RUNTARA_LOG_LEVEL=warning) shows how much of it is logging."""
import json
import os
import re
import shutil
import subprocess

from benchlib import HERE, Row, point_at, ratio_at_least, wait_until

ORDER = 30
CONNECTIONS = 64
PATH = "/api/v1/instances/status-1"


def wrk(port, seconds):
    """One wrk run; returns (requests/s, [(latency_ms, fraction)])."""
    script = os.path.join(HERE, "wrk-report.lua")
    out = subprocess.run(["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", script,
                          f"http://127.0.0.1:{port}{PATH}"],
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    m = re.search(r"^BENCH_JSON (.*)$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk printed no result:\n{out}")
    res = json.loads(m.group(1))
    if res["errors"] or res["non_2xx"]:
        raise RuntimeError(f"wrk saw errors: {res}")
    points = [(us / 1000, p / 100) for p, us in res["percentiles"]]
    points.append((res["max_us"] / 1000, 1.0))
    return res["requests"] / (res["duration_us"] / 1e6), points


def measure(port, seconds):
    wrk(port, 1)  # warm-up: connections, caches, the thread pool
    return wrk(port, seconds)


def daemon_rate(ctx, seconds, **env):
    """Start a daemon, make the instance, and measure; returns (rate, points, body)."""
    with ctx.daemon(RUNTARA_RUNNER="mock", **env) as d:
        with open(ctx.tool("bench-probe"), "rb") as f:
            img = d.upload("bench", "probe", f.read(), extra="&runner_type=native").json()
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img["image_id"], "instance_id": "status-1",
            "input": {"order": 42}, "env": {"MOCK_OUTPUT": '{"total": 17.5, "items": 3}'}})
        assert r.status == 201, r
        wait_until(lambda: d.request("GET", PATH + "?wait=5s").json()["status"] == "completed",
                   30, "the instance to complete")
        body = d.request("GET", PATH).body
        rate, points = measure(d.port, seconds)
    return rate, points, body


def bare_rate(ctx, seconds, body):
    with ctx.bare_server(body) as (_, port):
        return measure(port, seconds)


def run(ctx):
    if not shutil.which("wrk"):
        raise RuntimeError("wrk is not installed (scripts/install-deps.sh --bench)")
    seconds = ctx.pick(4, 12)
    threads = ctx.daemon_default("RUNTARA_HTTP_THREADS")
    rate, points, body = daemon_rate(ctx, seconds)
    ctx.log(f"daemon: {rate:,.0f} req/s")
    quiet, qpoints, _ = daemon_rate(ctx, seconds, RUNTARA_LOG_LEVEL="warning")
    ctx.log(f"daemon, no access log: {quiet:,.0f} req/s")
    brate, bpoints = bare_rate(ctx, seconds, body)
    ctx.log(f"bare-server: {brate:,.0f} req/s")
    ctx.cdf("GET status (daemon)", points=points)
    ctx.cdf("GET status, no access log (daemon)", points=qpoints)
    ctx.cdf("same body, bare libmicrohttpd (baseline)", points=bpoints, baseline=True)
    ctx.note(f"wrk -t2 -c{CONNECTIONS} -d{seconds}s; {threads} HTTP threads in both servers; "
             f"body {len(body)} B")
    return [Row("GET status req/s", rate, "req/s", brate, [ratio_at_least(0.7)]),
            Row("GET status req/s, no access log", quiet, "req/s", brate),
            Row("GET status p50 (wrk)", point_at(points, 0.5), "ms", point_at(bpoints, 0.5))]
