#!/usr/bin/env python3
"""Instance benchmarks, each against a baseline measured in the same run:

  start latency   POST /instances → the program's register call (daemon timestamps, from the
                  store), against posix_spawn → first syscall of the same binary
  checkpoints     durable checkpoints/s with 64 instances saving at once, and their p99
                  latency, against one SQLite connection doing INSERT + COMMIT per row with the
                  same durability (WAL, synchronous=FULL)

usage: bench/instances.py [BUILD_DIR] [--quick]"""
import concurrent.futures
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
args = [a for a in sys.argv[1:] if not a.startswith("--")]
QUICK = "--quick" in sys.argv
os.environ.setdefault("RUNTARA_BUILD_DIR", os.path.abspath(args[0] if args else "build"))
import harness  # noqa: E402

BUILD = os.environ["RUNTARA_BUILD_DIR"]
PROBE = os.path.join(BUILD, "bench", "bench-probe")


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def start_latency(n):
    base = subprocess.run([os.path.join(BUILD, "bench", "spawn-baseline"), PROBE, str(n)],
                          capture_output=True, text=True, check=True)
    baseline = [int(x) for x in base.stdout.split()]
    d = harness.Daemon(env={"RUNTARA_LOG_LEVEL": "warning"}).start()
    try:
        img = d.upload("bench", "probe", open(PROBE, "rb").read(),
                       extra="&runner_type=native").json()["image_id"]
        for i in range(n):
            r = d.request("POST", "/api/v1/instances",
                          json_body={"image_id": img, "instance_id": f"s{i}"})
            assert r.status == 201, r
            d.request("GET", f"/api/v1/instances/s{i}?wait=10s")
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        rows = db.execute("SELECT i.created_at, e.created_at FROM instances i JOIN events e "
                          "ON e.instance_id = i.instance_id AND e.type = 'registered'").fetchall()
        db.close()
        lat = [reg - created for created, reg in rows]
        assert len(lat) == n, (len(lat), n)
    finally:
        d.cleanup()
    return lat, baseline


def checkpoint_rate(instances, per_instance):
    d = harness.Daemon(env={"RUNTARA_LOG_LEVEL": "warning"}).start()
    try:
        img = d.upload("bench", "probe", open(PROBE, "rb").read(),
                       extra="&runner_type=native").json()["image_id"]
        ids = [f"c{i}" for i in range(instances)]
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: d.request(
                "POST", "/api/v1/instances",
                json_body={"image_id": img, "instance_id": i,
                           "env": {"BENCH_CHECKPOINTS": str(per_instance)}}), ids))
        for i in ids:
            while d.request("GET", f"/api/v1/instances/{i}?wait=30s").json()["status"] in \
                    ("pending", "running"):
                pass
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        first, last, count = db.execute(
            "SELECT MIN(created_at), MAX(created_at), COUNT(*) FROM checkpoints").fetchone()
        db.close()
        lat = []
        for i in ids:
            with open(os.path.join(d.data_dir, "bench", "runs", i, "lat.txt")) as f:
                lat += [int(x) for x in f]
    finally:
        d.cleanup()
    return count / ((last - first) / 1e6), lat, count


def sqlite_baseline(seconds):
    tmp = tempfile.mkdtemp()
    db = sqlite3.connect(os.path.join(tmp, "b.db"), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE c (id INTEGER PRIMARY KEY, k TEXT, data BLOB)")
    n, t0 = 0, time.monotonic()
    data = b"x" * 100
    while time.monotonic() - t0 < seconds:
        db.execute("BEGIN")
        db.execute("INSERT INTO c (k, data) VALUES (?, ?)", (f"k{n}", data))
        db.execute("COMMIT")
        n += 1
    rate = n / (time.monotonic() - t0)
    db.close()
    return rate


def main():
    n = 50 if QUICK else 200
    lat, base = start_latency(n)
    print(f"start latency, native runner ({n} sequential starts)")
    print(f"  POST start -> register:      p50 {pct(lat, 50) / 1000:7.2f} ms   "
          f"p99 {pct(lat, 99) / 1000:7.2f} ms")
    print(f"  posix_spawn -> first syscall: p50 {pct(base, 50) / 1000:7.2f} ms   "
          f"p99 {pct(base, 99) / 1000:7.2f} ms")
    print(f"  overhead:                     p50 {(pct(lat, 50) - pct(base, 50)) / 1000:7.2f} ms   "
          f"p99 {(pct(lat, 99) - pct(base, 99)) / 1000:7.2f} ms")

    per = 50 if QUICK else 200
    rate, clat, count = checkpoint_rate(64, per)
    brate = sqlite_baseline(3 if QUICK else 5)
    print(f"checkpoints, 64 instances x {per} saves ({count} durable checkpoints)")
    print(f"  rate:  {rate:9.0f}/s   baseline (1 connection, INSERT+COMMIT per row, FULL): "
          f"{brate:9.0f}/s   ratio {rate / brate:5.2f}")
    print(f"  latency per save: p50 {pct(clat, 50) / 1000:.2f} ms  p99 {pct(clat, 99) / 1000:.2f} ms"
          f"  mean {statistics.mean(clat) / 1000:.2f} ms")


if __name__ == "__main__":
    main()
