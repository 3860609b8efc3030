#!/usr/bin/env python3
"""The daemon's whole HTTP surface under a mutating fuzzer: the recorded requests of
tests/fuzz/corpus/http/ (the first byte of each names the server: even the management API, odd
the instance API socket), mutated by zzuf (or by a small mutator here when zzuf is absent), sent
one connection each to the real runtara-environment of the ASan+UBSan build (build-asan) for a
bounded time. It must not crash, must leave no sanitizer report, must still answer health, and
must hold no more file descriptors once every connection is closed than before the run.
Mutated inputs that ended the daemon are saved in build-fuzz/artifacts/daemon-*.

    scripts/fuzz-daemon.py [--seconds 30] [--build build-asan] [--seed N]

Ends with "N passed, N failed"."""
import argparse
import hashlib
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
ADMIN_KEY = "rtk_000000000000000000000000000000000000000000000001"
TENANT_KEY = "rtk_000000000000000000000000000000000000000000000002"
WORKERS = 8  # connections at once: most of a connection's time is waiting


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--build", default=os.path.join(ROOT, "build-asan"))
    p.add_argument("--seed", type=int, default=None)
    return p.parse_args()


def ensure_build(build):
    if not os.path.exists(os.path.join(build, "build.ninja")):
        subprocess.run(["meson", "setup", build, "-Db_sanitize=address,undefined",
                        "-Db_lundef=false"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["ninja", "-C", build, "runtara-environment", "runtara-shim"], check=True,
                   stdout=subprocess.DEVNULL)


def mutate_zzuf(data, seed, ratio):
    return subprocess.run(["zzuf", "-s", str(seed), "-r", f"{ratio:.4f}"], input=data,
                          stdout=subprocess.PIPE, check=True).stdout


def mutate_here(data, seed, ratio):
    """zzuf's default mode (xor of random bits), for machines without zzuf."""
    rnd = random.Random(seed)
    out = bytearray(data)
    for i in range(len(out)):
        for bit in range(8):
            if rnd.random() < ratio:
                out[i] ^= 1 << bit
    return bytes(out)


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def fds(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def send(addr, family, data, timeout=0.25):
    """One connection: the input, the sending side closed, the reply read until the daemon
    closes or stays silent for `timeout` (then the client goes away, as one whose request the
    daemon waits to see the rest of would). Returns the status line's code or a word."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    got = b""
    try:
        s.connect(addr)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon answered and closed before taking everything
        while True:
            k = s.recv(65536)
            if not k:
                break
            got += k
    except socket.timeout:
        pass
    except OSError:
        pass
    finally:
        s.close()
    if got.startswith(b"HTTP/1."):
        return got[9:12].decode(errors="replace")
    return "none" if not got else "other"


def main():
    args = parse_args()
    ensure_build(args.build)
    os.environ["RUNTARA_BUILD_DIR"] = args.build
    sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
    import harness  # noqa: E402 (after RUNTARA_BUILD_DIR is set)

    seeds = []
    corpus = os.path.join(ROOT, "tests", "fuzz", "corpus", "http")
    for name in sorted(os.listdir(corpus)):
        with open(os.path.join(corpus, name), "rb") as f:
            raw = f.read()
        if raw:
            seeds.append((name, raw[0] & 1, raw[1:]))
    mutate = mutate_zzuf if shutil.which("zzuf") else mutate_here
    seed0 = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)

    tmp_keys = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"runtara-fuzz-keys-{os.getpid()}")
    with open(tmp_keys, "w") as f:
        for key, role in ((ADMIN_KEY, "admin"), (TENANT_KEY, "tenant:acme")):
            f.write(f"{hashlib.sha256(key.encode()).hexdigest()} {role}\n")
    d = harness.Daemon(env={"RUNTARA_RUNNER": "mock", "RUNTARA_LOG_LEVEL": "warning",
                            "RUNTARA_API_KEYS_FILE": tmp_keys,
                            "RUNTARA_HTTP_IDLE_TIMEOUT_SECS": "2",
                            "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
                            "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1"})
    failures = []
    recent = []
    counts = {}
    try:
        d.start()
        auth = {"Authorization": f"Bearer {ADMIN_KEY}"}
        r = d.upload("acme", "fz", b"#!/bin/sh\nexit 0\n", key=ADMIN_KEY)
        assert r.status == 201, r
        for iid in ("fz-1", "fz-2"):
            r = d.request("POST", "/api/v1/instances", headers=auth, json_body={
                "image": "fz", "tenant_id": "acme", "instance_id": iid,
                "env": {"MOCK_DELAY_MS": "86400000"}})
            assert r.status == 201, r
        targets = [(("127.0.0.1", d.port), socket.AF_INET),
                   (os.path.join(d.data_dir, "core.sock"), socket.AF_UNIX)]
        for _, server, raw in seeds:  # the recorded requests as they are
            send(*targets[server], raw)
        before = fds(d.proc.pid)

        start = time.monotonic()
        lock = threading.Lock()
        state = {"n": 0}

        def worker():
            while time.monotonic() - start < args.seconds and not failures:
                with lock:
                    i = state["n"]
                    state["n"] += 1
                name, server, raw = seeds[i % len(seeds)]
                seed = seed0 + i
                ratio = (0.001, 0.004, 0.01, 0.03)[seed % 4]
                data = mutate(raw, seed, ratio)
                with lock:
                    recent.append((name, seed, data))
                    del recent[:-40]
                code = send(*targets[server], data)
                with lock:
                    counts[code] = counts.get(code, 0) + 1
                if d.proc.poll() is not None:
                    with lock:
                        if not failures:
                            failures.append(f"the daemon ended with {d.proc.returncode}")
                    return

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        n = sum(counts.values())
        elapsed = time.monotonic() - start

        if not failures:
            r = d.request("GET", "/api/v1/health")
            if r.status != 200:
                failures.append(f"health answers {r.status} after the run")
            # every connection of ours is closed; the daemon's end of those it still waits on
            # goes at its idle timeout (2 s): wait for the count to come back, bounded
            deadline = time.monotonic() + 10
            while fd_count(d.proc.pid) > len(before) and time.monotonic() < deadline:
                time.sleep(0.05)
            after = fds(d.proc.pid)
            extra = {k: v for k, v in after.items() if k not in before or before[k] != v}
            if len(after) > len(before):
                failures.append(f"file descriptors: {len(before)} before, {len(after)} after: "
                                f"{sorted(extra.values())[:20]}")
            print(f"fuzz-daemon: {n} mutated requests in {elapsed:.0f} s ({n / elapsed:.0f}/s, "
                  f"{'zzuf' if mutate is mutate_zzuf else 'built-in mutator'}, seed {seed0}); "
                  f"fds {len(before)} before, {len(after)} after; replies "
                  + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
        d.stop()
    except AssertionError as e:
        failures.append(str(e))
    finally:
        try:  # a daemon that ended by itself is reaped here, and its log checked
            d.stop()
        except AssertionError as e:
            failures.append(str(e))
        os.unlink(tmp_keys)
    if failures:
        art = os.path.join(ROOT, "build-fuzz", "artifacts")
        os.makedirs(art, exist_ok=True)
        for name, seed, data in recent:
            with open(os.path.join(art, f"daemon-{name}-{seed}"), "wb") as f:
                f.write(data)
        for f in failures:
            print(f"fuzz-daemon: {f[-4000:]}", file=sys.stderr)
        print(f"fuzz-daemon: the last {len(recent)} inputs are in {art}/daemon-*; daemon log:\n"
              + d.logs()[-4000:], file=sys.stderr)
    else:
        d.cleanup()
    print(f"{0 if failures else 1} passed, {1 if failures else 0} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
