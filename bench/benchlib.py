"""What a benchmark scenario (bench/scenarios/<name>.py) works with.

A scenario is one module with a docstring (its first line is the title) and a function
run(ctx) -> list[Row]. It measures its figures and the baseline of each in the same run, and may
record latency distributions (ctx.cdf) or one x/y series (ctx.series) for its plot. Targets:

    Row("p99 latency", 4.1, "ms", baseline=0.4, targets=[at_most(5)])
    Row("rate", 9000, "/s", baseline=3000, targets=[at_least(20000), ratio_at_least(10)])
    Row("p50 latency", 9.1, "ms", baseline=8.2, targets=[ratio_at_most(1.15)])  # ≤ 15 % over
    Row("RSS", 30.2, "MiB")                      # no target: a figure to report

A row passes when all its targets hold; a row without targets passes as "-"."""
import contextlib
import os
import resource
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))


class Target:
    """One bound on a row: kind is "max" or "min" on the value, "overhead_max" on value -
    baseline, "ratio_min" or "ratio_max" on value / baseline."""

    SYMBOLS = {"max": "≤", "min": "≥", "overhead_max": "overhead ≤", "ratio_min": "≥",
               "ratio_max": "≤"}

    def __init__(self, kind, bound):
        assert kind in self.SYMBOLS, kind
        self.kind = kind
        self.bound = bound

    def holds(self, row):
        if self.kind == "max":
            return row.value <= self.bound
        if self.kind == "min":
            return row.value >= self.bound
        if row.baseline is None:
            return False
        if self.kind == "overhead_max":
            return row.value - row.baseline <= self.bound
        if self.kind == "ratio_max":
            return row.baseline > 0 and row.value / row.baseline <= self.bound
        return row.baseline > 0 and row.value / row.baseline >= self.bound

    def text(self, unit):
        if self.kind in ("ratio_min", "ratio_max"):
            return f"{self.SYMBOLS[self.kind]} {fmt(self.bound)}× base"
        return f"{self.SYMBOLS[self.kind]} {fmt(self.bound)} {unit}".rstrip()


def at_most(bound):
    return Target("max", bound)


def at_least(bound):
    return Target("min", bound)


def overhead_at_most(bound):
    return Target("overhead_max", bound)


def ratio_at_least(bound):
    return Target("ratio_min", bound)


def ratio_at_most(bound):
    """value ≤ bound × baseline: e.g. 1.15, at most 15 % over the baseline."""
    return Target("ratio_max", bound)


class Row:
    """One figure of a scenario: its value, unit, the baseline measured in the same run (or
    None) and the targets (none: reported, not judged)."""

    def __init__(self, figure, value, unit, baseline=None, targets=()):
        self.figure = figure
        self.value = value
        self.unit = unit
        self.baseline = baseline
        self.targets = list(targets)

    @property
    def ratio(self):
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def passed(self):
        """True or False when judged; None ("-") when there is no target."""
        if not self.targets:
            return None
        return all(t.holds(self) for t in self.targets)

    def target_text(self):
        return ", ".join(t.text(self.unit) for t in self.targets) or "report"

    def misses(self):
        return [t for t in self.targets if not t.holds(self)]

    def to_json(self):
        return {"figure": self.figure, "value": self.value, "unit": self.unit,
                "baseline": self.baseline, "ratio": self.ratio,
                "targets": [{"kind": t.kind, "bound": t.bound, "text": t.text(self.unit),
                             "passed": t.holds(self)} for t in self.targets],
                "passed": self.passed}


def fmt(x):
    """A figure in a table: 3 significant digits, no exponent for everyday sizes."""
    if x is None:
        return "-"
    if isinstance(x, int) or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def fmt_ratio(x):
    """A ratio in a table: 2 decimals around 1, 2 significant digits when far from it."""
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 0.1:
        return f"{x:.2f}"
    return f"{x:.2g}"


def pct(values, p):
    """The p-th percentile (nearest rank) of values."""
    v = sorted(values)
    if not v:
        raise ValueError("no samples")
    return v[min(len(v) - 1, max(0, int(round(p / 100 * (len(v) - 1)))))]


def point_at(points, fraction):
    """The latency at a cumulative fraction of (latency, fraction) points (e.g. 0.5: p50)."""
    return next(x for x, f in points if f >= fraction)


class Context:
    """What run.py hands to a scenario's run(ctx)."""

    def __init__(self, name, build, quick, results):
        self.name = name
        self.build = build          # the release build directory (absolute)
        self.quick = quick          # QUICK=1: shorter runs, same scenarios
        self.results = results      # bench/results (absolute)
        self.cdfs = []              # (label, is_baseline, [(latency_ms, fraction)])
        self.xy = None              # (xlabel, ylabel, [(label, is_baseline, [(x, y)])])
        self.notes = []
        self.stats = {}

    def tool(self, name):
        """A program of the release build: build/bench/<name>, or build/<name>."""
        for p in (os.path.join(self.build, "bench", name), os.path.join(self.build, name)):
            if os.path.exists(p):
                return p
        raise FileNotFoundError(f"{name} is not in {self.build}")

    def pick(self, quick, full):
        return quick if self.quick else full

    def log(self, msg):
        print(f"  [{self.name}] {msg}", file=sys.stderr, flush=True)

    def note(self, msg):
        """A sentence printed under the table and kept in the JSON (how it was measured)."""
        self.notes.append(msg)

    def cdf(self, label, samples_ms=None, points=None, baseline=False):
        """Record a latency distribution for this scenario's CDF plot, either as raw samples (ms)
        or as (latency_ms, fraction) points (e.g. wrk's percentiles). Returns the samples'
        summary {n, p50, p90, p99, max}, or None for points."""
        if samples_ms is not None:
            v = sorted(samples_ms)
            step = max(1, len(v) // 2000)
            points = [(v[i], (i + 1) / len(v)) for i in range(0, len(v), step)]
            points.append((v[-1], 1.0))
            self.stats[label] = {"n": len(v), "p50": pct(v, 50), "p90": pct(v, 90),
                                 "p99": pct(v, 99), "max": v[-1]}
        self.cdfs.append((label, baseline, points))
        return self.stats.get(label)

    def series(self, label, points, xlabel, ylabel, baseline=False):
        """Record one x/y line for this scenario's plot (drawn when it has no distribution); the
        axis labels of the first series count."""
        if self.xy is None:
            self.xy = (xlabel, ylabel, [])
        self.xy[2].append((label, baseline, points))

    @contextlib.contextmanager
    def daemon(self, **env):
        """A runtara-environment of the build, started with the harness of the integration
        tests (own data directory, free loopback port), at the daemon's default log level
        unless env says otherwise; stopped and removed afterwards."""
        import harness
        env.setdefault("RUNTARA_LOG_LEVEL", None)
        d = harness.Daemon(env=env).start()
        try:
            yield d
        finally:
            d.cleanup()

    def daemon_default(self, name):
        """The daemon's default value of a setting, from its --print-config."""
        out = subprocess.run([self.tool("runtara-environment"), "--print-config"],
                             capture_output=True, text=True, check=True,
                             env={"DATA_DIR": "/nonexistent"}).stdout
        m = re.search(rf"^{re.escape(name)}=(.*?)  #", out, re.M)
        if not m:
            raise KeyError(name)
        return m.group(1)

    @contextlib.contextmanager
    def bare_server(self, body, unix_path=None):
        """bare-server (bench/bare-server.c) answering `body` (bytes) on a free loopback port
        with the daemon's default HTTP thread count, or on the unix socket unix_path with the
        instance API's (RUNTARA_CORE_THREADS); yields (process, port or None)."""
        import harness
        path = os.path.join(self.results, f"{self.name}-body.json")
        with open(path, "wb") as f:
            f.write(body)
        if unix_path:
            port, where = None, f"unix:{unix_path}"
            threads = self.daemon_default("RUNTARA_CORE_THREADS")
            ready = lambda: listening_unix(unix_path)  # noqa: E731
        else:
            port = harness.free_port()
            where, threads = str(port), self.daemon_default("RUNTARA_HTTP_THREADS")
            ready = lambda: listening(port)  # noqa: E731
        proc = subprocess.Popen([self.tool("bare-server"), where, threads, path])
        try:
            wait_until(ready, 10, "bare-server to listen")
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(10)
            os.unlink(path)


def listening(port):
    """True when something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def listening_unix(path):
    """True when something accepts connections on the unix socket path."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


def wait_until(fn, timeout, what, interval=0.02):
    """Call fn until it returns a true value; raise after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(interval)


def rss_kib(pid):
    """VmRSS of a process in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def seed_sleepers(d, n, first_usec, spread_usec, prefix="z"):
    """Stop daemon d and leave n instances in its store suspended in a durable sleep, with
    deadlines (CLOCK_REALTIME microseconds) spread evenly from first_usec over spread_usec, as a
    daemon that stopped would leave them. Written straight into the SQLite database, so a
    scenario need not wait for n processes to fall asleep first. Start d again to load them."""
    import sqlite3
    r = d.upload("bench", "sleeper", b"#!/bin/sh\nexit 0\n", extra="&runner_type=native")
    assert r.status == 201, r
    img = r.json()["image_id"]
    d.stop()
    db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
    now = int(time.time() * 1e6)
    db.executemany(
        "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, status, "
        "created_at, updated_at, termination_reason, sleep_until) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ((f"bench/{prefix}{i:07d}", f"{prefix}{i:07d}", "bench", img, "suspended", now, now,
          "sleeping",
          first_usec + i * spread_usec // n) for i in range(n)))
    db.commit()
    db.close()


def start_and_wait(d, image_id, iid):
    """Start instance iid of image_id on daemon d and wait until it has ended and its process's
    exit is recorded (after a program's own completion report, the exit is still to come): the
    next start must not share the machine with it. For one start at a time (start_latency.py,
    oci.py)."""
    r = d.request("POST", "/api/v1/instances", json_body={"image_id": image_id, "instance_id": iid})
    assert r.status == 201, r
    assert d.request("GET", f"/api/v1/instances/{iid}?wait=10s").status == 200
    deadline = time.monotonic() + 10
    while d.request("GET", f"/api/v1/instances/{iid}").json()["exit_code"] is None:
        assert time.monotonic() < deadline, f"{iid} did not exit"
        time.sleep(0.001)


def register_latencies(db, prefix):
    """POST start → register (ms) of the instances whose ids start with prefix, from the store
    (an sqlite3 connection to a stopped daemon's runtara.db): the instance's created_at and its
    "registered" event's."""
    rows = db.execute("SELECT i.created_at, e.created_at FROM instances i JOIN events e "
                      "ON e.instance_key = i.instance_key AND e.type = 'registered' "
                      "WHERE i.instance_id LIKE ? ORDER BY i.created_at", (prefix + "%",)).fetchall()
    return [(reg - created) / 1000 for created, reg in rows]


TERMINAL = ("completed", "failed", "cancelled", "suspended")


def _workflow_client(d, img, name, deadline, out):
    conn, k = d.conn(), 0
    while time.monotonic() < deadline:
        iid = f"{name}-{k}"
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


TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def machine_cpu_ms():
    """CPU time the whole machine has spent so far, every CPU, not idle (/proc/stat: user, nice,
    system, irq, softirq, steal), in ms."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6] + fields[7]) * TICK_MS


def process_cpu_ms(pid):
    """(the process's own CPU, that of its reaped children and theirs) so far, in ms
    (/proc/PID/stat: utime + stime, cutime + cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return ((int(fields[11]) + int(fields[12])) * TICK_MS,
            (int(fields[13]) + int(fields[14])) * TICK_MS)


def live_children_cpu_ms(pid):
    """CPU of the live children of pid so far, with what they reaped of theirs, in ms: the
    shim's zygote, whose children are the shims (shim-launch.h)."""
    total = 0.0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                kids = f.read().split()
        except OSError:
            continue
        for k in kids:
            try:
                total += sum(process_cpu_ms(int(k)))
            except (OSError, IndexError):
                pass
    return total


class CpuSplit:
    """CPU spent between start() and stop(), by party: the daemon itself, its shims and programs
    (those it reaped, and those its live children, the shim's zygote, reaped: a child's CPU
    moves into the daemon's figures when it is reaped, so the sum holds either way), this load
    generator, and the whole machine (which also counts the kernel's work for them all, and
    anything else running)."""

    def __init__(self, daemon_pid):
        self.pid = daemon_pid

    def _now(self):
        own, children = process_cpu_ms(self.pid)
        children += live_children_cpu_ms(self.pid)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return own, children, (ru.ru_utime + ru.ru_stime) * 1000, machine_cpu_ms()

    def start(self):
        self.t0 = self._now()
        return self

    def stop(self):
        t1 = self._now()
        self.daemon, self.children, self.loadgen, self.machine = \
            (b - a for a, b in zip(self.t0, t1))
        return self


def run_clients(client, args, seconds, concurrency, prefix):
    """`concurrency` threads each run client(*args, name, deadline, out) for `seconds`: name is
    <prefix><thread>, and client appends (time done, latency in ms) to out for each workflow.
    Returns (completed, elapsed seconds: the start → the last completion, [each latency])."""
    done, threads = [], []
    t0 = time.monotonic()
    for w in range(concurrency):
        t = threading.Thread(target=client, args=(*args, f"{prefix}{w}", t0 + seconds, done))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return len(done), max(t for t, _ in done) - t0, [ms for _, ms in done]


def run_workflows(d, image_id, seconds, concurrency=32, prefix="e"):
    """The end-to-end load (end_to_end.py): `concurrency` client threads each start an instance of
    image_id (POST /api/v1/instances), long-poll its status until it has completed, and start the
    next, for `seconds`. Instance ids are <prefix><thread>-<n>. Returns (completed, elapsed
    seconds: the start → the last completion, [each workflow's start → completed, in ms])."""
    return run_clients(_workflow_client, (d, image_id), seconds, concurrency, prefix)

# What bare-server answers every request of a workflow program with, on the floor: the
# registration ("checkpoint_id": null: a first run), each save (201: stored; no signal) and the
# completion alike.
FLOOR_BODY = b'{"checkpoint_id": null, "signal": null}'


def _floor_client(prog, env, reaped, name, deadline, out):
    k = 0
    while time.monotonic() < deadline:
        env = dict(env, RUNTARA_INSTANCE_ID=f"{name}-{k}")
        k += 1
        t0 = time.monotonic()
        pid = os.posix_spawn(prog, [prog], env)
        _, status, ru = os.wait4(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, f"{prog} ended with {status:#x}"
        out.append((time.monotonic(), (time.monotonic() - t0) * 1000))
        reaped.append((ru.ru_utime + ru.ru_stime) * 1000)


def run_floor(ctx, seconds, concurrency=32, prefix="f"):
    """The floor of a process per workflow on this machine: the end-to-end workflow program
    (e2e-workflow) started straight from this process with posix_spawn, its 12 instance-API
    requests answered at once by bare-server on a unix socket, and reaped; no daemon, no shim, no
    store, no durability, no management API. `concurrency` threads each start one and wait for
    it to end, for `seconds`. What any daemon that runs each workflow as a process of its own and
    speaks HTTP to it costs here at least. Returns (completed, elapsed seconds, [each start →
    exit, in ms], CpuSplit of bare-server (its `daemon` is bare-server's CPU), the CPU of the
    programs in ms, from wait4)."""
    prog = ctx.tool("e2e-workflow")
    with tempfile.TemporaryDirectory(prefix="runtara-bench-") as tmp:
        sock = os.path.join(tmp, "core.sock")
        with ctx.bare_server(FLOOR_BODY, unix_path=sock) as (proc, _):
            env = {"RUNTARA_SERVER_ADDR": f"unix:{sock}", "RUNTARA_TENANT_ID": "bench",
                   "RUNTARA_INSTANCE_TOKEN": "floor", "RUNTARA_ATTEMPT": "1",
                   "RUNTARA_SLEEP_SUSPEND_MS": ctx.daemon_default("RUNTARA_SLEEP_SUSPEND_MS")}
            reaped = []
            cpu = CpuSplit(proc.pid).start()
            n, elapsed, lat = run_clients(_floor_client, (prog, env, reaped), seconds,
                                          concurrency, prefix)
            cpu.stop()
    return n, elapsed, lat, cpu, sum(reaped)
