"""Peers: whole workflows against Restate, the durable-execution engine a user would pick instead.

Measured, in one run: the end_to_end workflow (bench/e2e-workflow.c: 10 steps, each a checksum
over 4 KiB saved as a durable checkpoint) on runtara-environment (release build, native runner,
SQLite), and the same workflow written for Restate (bench/peers/restate-workflow.cjs: a Restate
workflow of 10 ctx.run() steps) on restate-server with its Node SDK, both pinned exactly in
bench/peers/package.json and installed with npm into the build directory at the first run. One
load generator (bench/peers/loadgen.cjs) drives both the same way: a warm-up, then workflows one
at a time, then many with 32 in flight; it checks every result and measures CPU per named
process (with its reaped children) and for the whole machine, and the peak memory.

Targets (the whole-workflow issue): 32 in flight, workflows/s >= 5x Restate's; one at a time,
p50 <= 1/4 of Restate's (and <= 5 ms, in end_to_end). CPU per workflow and memory are reported
beside Restate's.

Also reported, against Restate's rate of the same run: the floor of a process per workflow
(benchlib.run_floor: the program and bare-server, no daemon), and the machine CPU per workflow
that 5x Restate's rate leaves above that floor for the daemon, the shim, the store and the load
generator together.

Skipped, with a line saying why, when Node.js or npm is missing, when the npm install fails, or
when Restate's ports (8080, 9070, 9080, 5122) are taken."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request

from benchlib import Row, ratio_at_least, ratio_at_most, run_floor

ORDER = 55
PEERS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "peers")
PORTS = (8080, 9070, 9080, 5122)  # Restate's ingress, admin, SDK endpoint, node-to-node


def skip(why):
    print(f"peers: SKIPPED: {why}", flush=True)
    return []


def install(ctx):
    """bench/peers installed into <build>/peers (node_modules); the directory, or None."""
    dest = os.path.join(ctx.build, "peers")
    marker = os.path.join(dest, "node_modules", "@restatedev", "restate-server", "package.json")
    with open(os.path.join(PEERS, "package.json")) as f:
        want = json.load(f)["dependencies"]["@restatedev/restate-server"]
    if os.path.exists(marker):
        with open(marker) as f:
            if json.load(f)["version"] == want:
                return dest
    os.makedirs(dest, exist_ok=True)
    for name in ("package.json", ".npmrc"):
        shutil.copy(os.path.join(PEERS, name), dest)
    ctx.log("installing Restate with npm (first run only)")
    p = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=dest,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        print(p.stderr[-2000:], flush=True)
        return None
    return dest


def port_taken(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url, body=None, timeout=2):
    try:
        req = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status < 300
    except OSError:
        return False


def wait_for(fn, secs, what):
    end = time.monotonic() + secs
    while not fn():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def loadgen(ctx, dest, system, base, pids, phases, image_id=""):
    out = subprocess.run(["node", os.path.join(PEERS, "loadgen.cjs"), system, base,
                          f"{system}{int(time.time())}",
                          ",".join(f"{k}={v}" for k, v in pids.items()), image_id],
                         capture_output=True, text=True, timeout=1800, cwd=dest,
                         env=dict(os.environ, PHASES=phases))
    if out.returncode != 0:
        raise RuntimeError(f"the load generator failed on {system}: {out.stderr[-1500:]}")
    return json.loads(out.stdout)


def run_runtara(ctx, dest, phases):
    with ctx.daemon() as d:
        with open(ctx.tool("e2e-workflow"), "rb") as f:
            img = d.upload("bench", "e2e", f.read(), extra="&runner_type=native").json()
        time.sleep(1)
        with open(f"/proc/{d.proc.pid}/status") as f:
            idle = next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
        res = loadgen(ctx, dest, "runtara", f"http://127.0.0.1:{d.port}",
                      {"daemon": d.proc.pid}, phases, img["image_id"])
    res["idle_rss_mib"] = {"daemon": idle}
    return res


def run_restate(ctx, dest, phases):
    tmp = tempfile.mkdtemp(prefix="runtara-bench-restate-")
    server = sdk = None
    try:
        binary = os.path.join(dest, "node_modules", "@restatedev", "restate-server-linux-x64",
                              "bin", "restate-server")
        server = subprocess.Popen([binary, "--no-logo", "--base-dir", os.path.join(tmp, "data"),
                                   "--node-name", "bench"], stdout=subprocess.DEVNULL,
                                  stderr=open(os.path.join(tmp, "server.log"), "w"),
                                  start_new_session=True)
        wait_for(lambda: http_ok("http://127.0.0.1:9070/health"), 60, "restate-server")
        sdk = subprocess.Popen(["node", os.path.join(PEERS, "restate-workflow.cjs")], cwd=dest,
                               env=dict(os.environ, SDK_PORT="9080",
                                        NODE_PATH=os.path.join(dest, "node_modules")),
                               stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(tmp, "sdk.log"), "w"),
                               start_new_session=True)
        wait_for(lambda: port_taken(9080), 30, "the SDK endpoint")
        if not http_ok("http://127.0.0.1:9070/deployments", b'{"uri":"http://127.0.0.1:9080"}',
                       timeout=30):
            raise RuntimeError("Restate refused the deployment")
        wait_for(lambda: http_ok("http://127.0.0.1:8080/e2e/ready/run", b"{}", timeout=10), 60,
                 "Restate's ingress")
        time.sleep(1)
        idle = {}
        for name, p in (("server", server), ("sdk", sdk)):
            with open(f"/proc/{p.pid}/status") as f:
                idle[name] = next(int(line.split()[1]) for line in f
                                  if line.startswith("VmRSS")) / 1024
        res = loadgen(ctx, dest, "restate", "http://127.0.0.1:8080",
                      {"server": server.pid, "sdk": sdk.pid}, phases)
        res["idle_rss_mib"] = idle
        return res
    finally:
        for p in (sdk, server):
            if p:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def per_workflow(phase):
    n = phase["workflows"]
    return {k: v / n for k, v in phase["cpu"].items()}


def run(ctx):
    if not shutil.which("node") or not shutil.which("npm"):
        return skip("Node.js and npm are not installed (apt-get install nodejs npm)")
    taken = [p for p in PORTS if port_taken(p)]
    if taken:
        return skip(f"Restate's ports {taken} are taken on this machine")
    dest = install(ctx)
    if not dest:
        return skip("npm could not install Restate (the npm registry is not reachable?)")
    phases = ("warmup:20:8,serial:50:1,load:400:32" if ctx.quick
              else "warmup:100:8,serial:200:1,load:2000:32")
    ours = run_runtara(ctx, dest, phases)
    theirs = run_restate(ctx, dest, phases)
    fn, fel, _, fcpu, _ = run_floor(ctx, ctx.pick(3, 8), 32)
    f_rate, f_cpu = fn / fel, fcpu.machine / fn
    # CPU time the machine has per second, in ms: what a rate of r workflows/s allows each one
    budget = os.cpu_count() * 1000 / (5 * theirs["phases"]["load"]["rate"])
    ctx.log(f"runtara: {ours['phases']['load']['rate']:.0f}/s, "
            f"restate: {theirs['phases']['load']['rate']:.0f}/s at 32 in flight")
    o_load, t_load = ours["phases"]["load"], theirs["phases"]["load"]
    o_one, t_one = ours["phases"]["serial"], theirs["phases"]["serial"]
    o_cpu, t_cpu = per_workflow(o_load), per_workflow(t_load)
    o_cpu1, t_cpu1 = per_workflow(o_one), per_workflow(t_one)
    ctx.note(f"{phases.replace(',', ', ')} (phase:workflows:in flight), one load generator "
             "(bench/peers/loadgen.cjs) for both; baseline: restate-server 1.7.12 with "
             "@restatedev/restate-sdk 1.17.2 on Node "
             + subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
             .strip()
             + f"; Restate's CPU: server {t_cpu['server']:.2f} + SDK {t_cpu['sdk']:.2f} ms per "
             f"workflow at 32 in flight")
    return [
        Row("vs Restate: workflows/s, 32 in flight", o_load["rate"], "/s", t_load["rate"],
            [ratio_at_least(5)]),
        Row("vs Restate: p50, 32 in flight", o_load["p50"], "ms", t_load["p50"]),
        Row("vs Restate: p50, one at a time", o_one["p50"], "ms", t_one["p50"],
            [ratio_at_most(0.25)]),
        Row("vs Restate: p99, one at a time", o_one["p99"], "ms", t_one["p99"]),
        Row("vs Restate: CPU/workflow, machine, 32 in flight", o_cpu["machine"], "ms",
            t_cpu["machine"]),
        Row("vs Restate: CPU/workflow, machine, one at a time", o_cpu1["machine"], "ms",
            t_cpu1["machine"]),
        Row("vs Restate: CPU/workflow, server side, 32 in flight", o_cpu["daemon"], "ms",
            t_cpu["server"] + t_cpu["sdk"]),
        Row("vs Restate: peak memory under load", ours["peak_rss_mib"]["daemon"], "MiB",
            theirs["peak_rss_mib"]["server"] + theirs["peak_rss_mib"]["sdk"]),
        Row("vs Restate: idle memory", ours["idle_rss_mib"]["daemon"], "MiB",
            theirs["idle_rss_mib"]["server"] + theirs["idle_rss_mib"]["sdk"]),
        # below 5, the target is out of reach for any daemon of this design on this machine
        Row("floor (no daemon) vs Restate: workflows/s, 32 in flight", f_rate, "/s",
            t_load["rate"]),
        Row("floor: CPU/workflow, machine, 32 in flight", f_cpu, "ms"),
        Row("5x Restate: machine CPU/workflow left above the floor", budget - f_cpu, "ms"),
    ]
