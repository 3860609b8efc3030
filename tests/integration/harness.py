"""Integration test harness: starts the real runtara-environment binary on a free loopback port
with its own data directory, talks HTTP to it, and runs test functions with TAP output ending in
"N passed, N failed" (STYLE R23/R24).

The build directory comes from RUNTARA_BUILD_DIR (meson sets it); the default is ./build."""
import http.client
import json
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback

BUILD = os.environ.get("RUNTARA_BUILD_DIR", os.path.join(os.path.dirname(__file__), "../../build"))
DAEMON = os.path.join(BUILD, "runtara-environment")
# The store of the daemons: SQLite in their data directory, or with RUNTARA_TEST_STORE=postgres a
# PostgreSQL database per data directory (tests/integration/pg.py).
STORE = os.environ.get("RUNTARA_TEST_STORE", "sqlite")
_pg_databases = {}
CTL = os.path.join(BUILD, "runtara-ctl")


_sanitized = None


def _build_factor():
    """3 for a sanitizer build of the daemon (ASan, TSan: everything runs several times slower),
    else 1."""
    global _sanitized
    if _sanitized is None:
        try:
            with open(DAEMON, "rb") as f:
                blob = f.read()
            _sanitized = b"__asan_init" in blob or b"__tsan_init" in blob
        except OSError:
            _sanitized = False
    return 3.0 if _sanitized else 1.0


def exit_record(run_dir):
    """How the last launch in run_dir ended, as runtara-shim recorded it: the line of JSON at the
    end of its lock file (src/runner/exit-status.h); None if there is none (yet)."""
    try:
        with open(os.path.join(run_dir, "shim.lock")) as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        return None
    for line in lines:
        if line.startswith("{"):
            return json.loads(line)
    return None


def time_scale():
    """What every deadline of the tests is multiplied by, so that a slow machine makes a test
    wait longer, never fail: RUNTARA_TEST_TIME_SCALE if set, else the build's factor times the
    machine's load per CPU right now when that is above 1 (other work on the machine)."""
    fixed = os.environ.get("RUNTARA_TEST_TIME_SCALE")
    if fixed:
        return float(fixed)
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return _build_factor() * max(1.0, load)


def deadline_in(secs):
    """A time.monotonic() deadline secs from now, scaled by time_scale()."""
    return time.monotonic() + secs * time_scale()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return f"<{self.status} {self.body[:300]!r}>"


class Daemon:
    """One daemon process. Keyword env entries override the defaults; None removes a variable.
    With ssl_context (an ssl.SSLContext) the daemon is spoken to over HTTPS."""

    def __init__(self, data_dir=None, env=None, port=None, wrapper=(), ssl_context=None):
        self.tmp = tempfile.mkdtemp(prefix="runtara-it-")
        self.ssl_context = ssl_context
        self.wrapper = list(wrapper)  # a command the daemon runs under, such as strace
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.port = port or free_port()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
        # tests stop daemons often, with instances still running: no drain unless a test asks.
        # Their programs are shell scripts, run natively: tenant keys may (test_isolation.py
        # covers the setting itself and the OCI runner).
        self.env.update({"DATA_DIR": self.data_dir, "RUNTARA_ENV_HTTP_PORT": str(self.port),
                         "RUNTARA_LOG_LEVEL": "debug", "RUNTARA_SHUTDOWN_GRACE_SECS": "0",
                         "RUNTARA_RUNNER": "native", "RUNTARA_NATIVE_TENANTS": "*",
                         # never the host's /etc/runtara/environment
                         "RUNTARA_SETTINGS_FILE": ""})
        if STORE == "postgres" and "RUNTARA_DATABASE_URL" not in (env or {}):
            # a database of its own, the same for a daemon started again on this data directory
            if self.data_dir not in _pg_databases:
                import pg
                _pg_databases[self.data_dir] = pg.fresh_database()
            self.env["RUNTARA_DATABASE_URL"] = _pg_databases[self.data_dir]
        for k, v in (env or {}).items():
            if v is None:
                self.env.pop(k, None)
            else:
                self.env[k] = v
        self.log_path = os.path.join(self.tmp, "daemon.log")
        self.proc = None

    def start(self, wait=True):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.wrapper + [DAEMON], env=self.env, stdout=self.log,
                                     stderr=self.log)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=20):
        deadline = deadline_in(timeout)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.request("GET", "/api/v1/health").status in (200, 503):
                    return
            except OSError:
                time.sleep(0.02)
        raise AssertionError("daemon did not become ready:\n" + self.logs())

    def logs(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, *texts, timeout=10):
        """Wait until every text is in the log. Lines of level info and debug reach the log in
        batches, up to 10 ms after the event (log_buffer_start in src/base/log.h)."""
        deadline = deadline_in(timeout)
        while True:
            logs = self.logs()
            if all(t in logs for t in texts):
                return logs
            if time.monotonic() > deadline:
                missing = [t for t in texts if t not in logs]
                raise AssertionError(f"not in the daemon's log: {missing}\n{logs[-3000:]}")
            time.sleep(0.01)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        """Stop the daemon. A SIGTERM stop must end with status 0, and no stop may leave a
        sanitizer report in the log (the ASan+UBSan build runs these same tests)."""
        signalled = False
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout * time_scale())
            signalled = True
        rc = self.proc.returncode if self.proc else None
        if self.proc:
            self.log.close()
            self.proc = None
            self.check_sanitizers()
            if signalled and sig == signal.SIGTERM and rc != 0:
                raise AssertionError(f"daemon exited with {rc} after SIGTERM:\n{self.logs()}")
        return rc

    def check_sanitizers(self):
        text = self.logs()
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "WARNING: ThreadSanitizer"):
            if marker in text:
                raise AssertionError(f"sanitizer report in the daemon log:\n{text[-6000:]}")

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def edit_store(self, sql, *args):
        """Change the SQLite store behind the daemon's back: the daemon holds its database alone,
        so stop it, run sql with args, and start it again."""
        import sqlite3
        self.stop()
        db = sqlite3.connect(os.path.join(self.data_dir, "runtara.db"))
        try:
            db.execute(sql, args)
            db.commit()
        finally:
            db.close()
        self.start()

    @property
    def url(self):
        return f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"

    def conn(self, timeout=30):
        timeout *= time_scale()
        if self.ssl_context:
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                               context=self.ssl_context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, key=None, json_body=None, conn=None):
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        c = conn or self.conn()
        try:
            c.request(method, path, body=body, headers=headers)
            r = c.getresponse()
            return Response(r.status, r.getheaders(), r.read())
        finally:
            if conn is None:
                c.close()

    def upload(self, tenant, name, data, key=None, extra="", headers=None):
        h = {"Content-Type": "application/octet-stream"}
        h.update(headers or {})
        q = f"/api/v1/images?name={name}" + (f"&tenant_id={tenant}" if tenant else "") + extra
        return self.request("POST", q, body=data, headers=h, key=key)


def keyed_daemon(env=None):
    """A started daemon with an admin key ("ops") and tenant keys for acme and beta, read from a
    keys file; returns (daemon, keys by name)."""
    d = Daemon(env=env)
    keys, lines = {}, []
    for name, role in (("ops", "admin"), ("acme", "tenant:acme"), ("beta", "tenant:beta")):
        k = "rtk_" + os.urandom(24).hex()
        keys[name] = k
        lines.append(f"{hashlib.sha256(k.encode()).hexdigest()} {role} {name}")
    path = os.path.join(d.tmp, "keys")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    d.env["RUNTARA_API_KEYS_FILE"] = path
    return d.start(), keys


def run_ctl(daemon, *args, key=None, env=None, input=None, timeout=60):
    """Run runtara-ctl against the daemon; returns CompletedProcess with text output."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
    e["RUNTARA_URL"] = daemon.url if daemon else "http://127.0.0.1:1"
    if key:
        e["RUNTARA_API_KEY"] = key
    e.update(env or {})
    return subprocess.run([CTL, *args], env=e, capture_output=True, text=True, input=input,
                          timeout=timeout * time_scale())


def error_of(resp):
    """The {"error":{...}} object of a response, checked for shape."""
    doc = resp.json()
    assert set(doc) == {"error"}, doc
    err = doc["error"]
    assert isinstance(err.get("code"), str) and isinstance(err.get("message"), str), err
    assert err["message"][:1].islower(), f"messages start lower-case: {err['message']!r}"
    return err


_tests = []


def test(fn):
    _tests.append(fn)
    return fn


def skip_if(cond, reason):
    """Below @test: the test is reported skipped, with the reason, where cond holds (a test that
    cannot mean anything there, as a native-only mechanism under another runner)."""
    def wrap(fn):
        if cond:
            fn.skip = reason
        return fn
    return wrap


def main():
    selected = [t for t in _tests if len(sys.argv) < 2 or any(a in t.__name__ for a in sys.argv[1:])]
    print(f"1..{len(selected)}", flush=True)
    passed = failed = skipped = 0
    for i, t in enumerate(selected, 1):
        if getattr(t, "skip", None):
            print(f"ok {i} - {t.__name__} # SKIP {t.skip}", flush=True)
            skipped += 1
            continue
        try:
            t()
            print(f"ok {i} - {t.__name__}", flush=True)
            passed += 1
        except Exception:
            for line in traceback.format_exc().splitlines():
                print(f"# {line}")
            print(f"not ok {i} - {t.__name__}", flush=True)
            failed += 1
    if skipped:
        print(f"# {skipped} skipped", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)
