#!/usr/bin/env python3
"""Tests of libruntara (src/sdk) against the fake daemon of fake_core.py: test-sdk-client runs
one scenario of calls per test, and the sdk-workflow and shell-workflow examples run as a
launched instance would. Each test starts its own fake on a unix socket in a temp dir and passes
the runner's variables (docs/instance-api.md) to the program. TAP output ending in
"N passed, N failed" (tests/integration/harness.py).

Programs come from RUNTARA_SDK_CLIENT / RUNTARA_SDK_WORKFLOW (meson sets them), else from
RUNTARA_BUILD_DIR/src/sdk/."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, HERE)

from fake_core import FakeCore, Instance  # noqa: E402
from harness import main, test, deadline_in  # noqa: E402

BUILD = os.path.abspath(os.environ.get("RUNTARA_BUILD_DIR", os.path.join(ROOT, "build")))
CLIENT = os.environ.get("RUNTARA_SDK_CLIENT", os.path.join(BUILD, "src/sdk/test-sdk-client"))
WORKFLOW = os.environ.get("RUNTARA_SDK_WORKFLOW", os.path.join(BUILD, "src/sdk/sdk-workflow"))
LIB = os.environ.get("RUNTARA_SDK_LIB", os.path.join(BUILD, "src/sdk/libruntara.so"))
HEADER = os.environ.get("RUNTARA_SDK_HEADER", os.path.join(ROOT, "src/sdk/runtara.h"))
CLIENT, WORKFLOW, LIB, HEADER = map(os.path.abspath, (CLIENT, WORKFLOW, LIB, HEADER))
SHELL_WORKFLOW = os.path.join(ROOT, "examples/shell-workflow/workflow.sh")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Setup:
    """A temp dir holding the fake's socket and the program's working directory (the run
    directory), and the fake itself."""

    def __init__(self, input=None, tcp=False, **kw):
        self.tmp = tempfile.mkdtemp(prefix="rt-sdk-")
        self.sock = os.path.join(self.tmp, "core.sock")
        self.core = FakeCore(self.sock, tcp=tcp, instance=Instance(input=input), **kw).start()
        self.run_dir = os.path.join(self.tmp, "run")
        os.mkdir(self.run_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.core.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @property
    def inst(self):
        return self.core.instance

    def env(self, **overrides):
        """The environment of a launch: ours without RUNTARA_*, plus the runner's variables;
        an override of None removes one."""
        e = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
        e.update(self.core.env())
        for k, v in overrides.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def popen(self, argv, **overrides):
        return subprocess.Popen(argv, env=self.env(**overrides), cwd=self.run_dir, text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)

    def run(self, argv, want_rc=0, timeout=60, pass_fds=(), **overrides):
        p = subprocess.run(argv, env=self.env(**overrides), cwd=self.run_dir, text=True,
                           capture_output=True, timeout=timeout, pass_fds=pass_fds)
        check_output(p.args, p.returncode, p.stdout, p.stderr, want_rc)
        return p

    def client(self, scenario, *args, want_rc=0, **overrides):
        """Run a test-sdk-client scenario; returns its key=value lines as a dict."""
        p = self.run([CLIENT, scenario, *args], want_rc=want_rc, **overrides)
        return parse_kv(p.stdout)

    def steps_log(self):
        try:
            with open(os.path.join(self.run_dir, "steps.log")) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []


def check_output(argv, rc, out, err, want_rc):
    for m in SANITIZER_MARKERS:
        assert m not in err, f"sanitizer report from {argv}:\n{err[-6000:]}"
    assert rc == want_rc, f"{argv} exited with {rc}, want {want_rc}\nstdout:\n{out}\nstderr:\n{err}"


def parse_kv(text):
    kv = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep and " " not in k:
            kv[k] = v
    return kv


def open_failure(out):
    """The errno name and message of a failed runtara_open() as test-sdk-client prints them."""
    m = re.search(r"^open: errno=(\S+) message=(.*)$", out, re.M)
    assert m, out
    return m[1], m[2]


def client_open_fails(s, **overrides):
    p = s.run([CLIENT, "open"], want_rc=2, **overrides)
    return open_failure(p.stdout)


# ---- runtara_open: environment and addresses ---------------------------------------------------

@test
def test_open_registers_with_token():
    with Setup() as s:
        kv = s.client("open")
        assert kv == {"instance": "i-1", "tenant": "acme", "attempt": "1",
                      "checkpoint": "(none)", "signal": "none"}, kv
        [reg] = s.core.find("POST", r"/register$")
        assert reg.path == "/api/v1/instances/i-1/register", reg
        assert reg.headers["authorization"] == f"Bearer {s.inst.token}", reg.headers
        assert reg.headers["user-agent"].startswith("libruntara/"), reg.headers
        assert s.inst.status == "running"


@test
def test_open_attempt_and_checkpoint():
    with Setup() as s:
        s.inst.relaunch()
        s.inst.relaunch()
        s.inst.checkpoint_id = "step-2"
        assert s.client("open")["attempt"] == "3"
        assert s.client("open")["checkpoint"] == "step-2"
        # The daemon's answer to /register wins over a stale environment.
        kv = s.client("open", RUNTARA_CHECKPOINT_ID=None)
        assert kv["checkpoint"] == "step-2", kv
        kv = s.client("open", RUNTARA_CHECKPOINT_ID="step-1")
        assert kv["checkpoint"] == "step-2", kv
        # Not its attempt, which may lag one behind the launch's (docs/instance-api.yaml).
        assert s.client("open", RUNTARA_ATTEMPT="4")["attempt"] == "4"


@test
def test_missing_environment_variable():
    with Setup() as s:
        for var in ("RUNTARA_INSTANCE_ID", "RUNTARA_TENANT_ID", "RUNTARA_SERVER_ADDR",
                    "RUNTARA_INSTANCE_TOKEN", "RUNTARA_ATTEMPT"):
            err, msg = client_open_fails(s, **{var: None})
            assert err == "EINVAL", (var, err)
            assert msg.startswith(f"environment variable {var} is not set"), msg
            err, _ = client_open_fails(s, **{var: ""})
            assert err == "EINVAL", (var, err)
        p = s.run([WORKFLOW], want_rc=1, RUNTARA_INSTANCE_TOKEN=None)
        assert "sdk-workflow: environment variable RUNTARA_INSTANCE_TOKEN is not set" in p.stderr, \
            p.stderr
        assert s.core.requests == [], s.core.requests


@test
def test_malformed_environment():
    with Setup() as s:
        cases = [
            ({"RUNTARA_ATTEMPT": "0"}, "EINVAL", 'invalid RUNTARA_ATTEMPT "0": expected a positive'),
            ({"RUNTARA_ATTEMPT": "2x"}, "EINVAL", 'invalid RUNTARA_ATTEMPT "2x"'),
            ({"RUNTARA_ATTEMPT": "-1"}, "EINVAL", 'invalid RUNTARA_ATTEMPT "-1"'),
            ({"RUNTARA_SERVER_ADDR": "nonsense"}, "EINVAL",
             'invalid RUNTARA_SERVER_ADDR "nonsense": expected "unix:/path/to/socket" or "host:port"'),
            ({"RUNTARA_SERVER_ADDR": "host:99999"}, "EINVAL", 'invalid RUNTARA_SERVER_ADDR'),
            ({"RUNTARA_SERVER_ADDR": "::1:8001"}, "EINVAL",
             'an IPv6 address must be written in brackets, as in "[::1]:8001"'),
            ({"RUNTARA_SERVER_ADDR": "[::1]:1"}, "ECONNREFUSED", 'cannot connect to "[::1]:1": '),
            ({"RUNTARA_SERVER_ADDR": "unix:"}, "EINVAL", "the socket path is empty"),
            ({"RUNTARA_SERVER_ADDR": "unix:/" + "x" * 120}, "ENAMETOOLONG",
             "the socket path is longer than 107 bytes"),
            ({"RUNTARA_INSTANCE_TOKEN": "se cret"}, "EINVAL",
             "invalid RUNTARA_INSTANCE_TOKEN: it contains spaces or control characters"),
        ]
        for env, want_err, want_msg in cases:
            err, msg = client_open_fails(s, **env)
            assert (err, want_msg in msg) == (want_err, True), (env, err, msg)
        assert "se cret" not in msg
        assert s.core.requests == [], s.core.requests


@test
def test_wrong_token():
    with Setup() as s:
        err, msg = client_open_fails(s, RUNTARA_INSTANCE_TOKEN="not-the-token")
        assert err == "EACCES", err
        assert msg == 'could not register instance "i-1": invalid instance token', msg
        p = s.run([WORKFLOW], want_rc=1, RUNTARA_INSTANCE_TOKEN="not-the-token")
        assert 'sdk-workflow: could not register instance "i-1": invalid instance token' in \
            p.stderr, p.stderr
        # Another instance's id with this token is refused too.
        err, _ = client_open_fails(s, RUNTARA_INSTANCE_ID="i-2")
        assert err == "EACCES", err


@test
def test_open_when_instance_no_longer_runs():
    with Setup() as s:
        s.inst.status = "suspended"
        err, msg = client_open_fails(s)
        assert err == "EALREADY", err
        assert msg == ('could not register instance "i-1": instance "i-1" is suspended; '
                       "the process should exit"), msg


@test
def test_token_of_an_earlier_launch():
    with Setup() as s:
        old = s.core.env()
        s.inst.relaunch()
        err, msg = client_open_fails(s, **old)
        assert err == "EACCES" and "invalid instance token" in msg, (err, msg)
        assert s.client("open")["attempt"] == "2"


@test
def test_addresses():
    with Setup() as s:
        assert s.client("open", RUNTARA_SERVER_ADDR="unix:" + s.sock)["instance"] == "i-1"
        assert s.client("open", RUNTARA_SERVER_ADDR=s.sock)["instance"] == "i-1"
        err, msg = client_open_fails(s, RUNTARA_SERVER_ADDR=s.sock + ".missing")
        assert err == "ECONNREFUSED", err
        assert msg == (f'could not register instance "i-1": cannot connect to "{s.sock}.missing": '
                       "No such file or directory"), msg
    with Setup(tcp=True) as s:
        addr = s.core.addr
        assert re.match(r"^127\.0\.0\.1:\d+$", addr), addr
        assert s.client("open", RUNTARA_SERVER_ADDR=addr)["instance"] == "i-1"
        assert s.client("open", RUNTARA_SERVER_ADDR="http://" + addr)["instance"] == "i-1"
        kv = s.client("binary", RUNTARA_SERVER_ADDR=addr, http_proxy="http://127.0.0.1:9",
                      HTTP_PROXY="http://127.0.0.1:9")
        assert "done" in s.run([CLIENT, "open"]).stdout
        assert kv["missing_error"].startswith('could not read checkpoint "missing"'), kv
        s.core.stop()
        err, msg = client_open_fails(s, RUNTARA_SERVER_ADDR=addr)
        assert err == "ECONNREFUSED" and f'cannot connect to "{addr}"' in msg, (err, msg)
        # A name that does not resolve will not while the daemon restarts: no retries (a name
        # glibc refuses without asking DNS, so the test needs no network).
        t0 = time.monotonic()
        err, msg = client_open_fails(s, RUNTARA_SERVER_ADDR="bad..host:80",
                                     RUNTARA_RECONNECT_SECS="30")
        assert err == "ECONNREFUSED" and msg.endswith(
            'cannot connect to "bad..host:80": Name or service not known'), (err, msg)
        assert time.monotonic() - t0 < 5, "an unresolvable name was retried"


@test
def test_connection_is_kept_alive():
    with Setup() as s:
        s.client("binary")
        assert len(s.core.requests) >= 6, s.core.requests
        assert s.core.connections_accepted == 1, s.core.connections_accepted


def connected(path):
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.connect(path)
    return c


def given(conn, ppid=None):
    """The variables of a connection the runner made ahead (runtara-shim), for a child of ours."""
    return {"RUNTARA_SERVER_FD": str(conn.fileno()),
            "RUNTARA_SERVER_FD_PPID": str(os.getpid() if ppid is None else ppid)}


@test
def test_the_connection_made_ahead_carries_the_requests():
    with Setup() as s, connected(s.sock) as conn:
        assert s.core.wait_for(lambda i: s.core.connections_accepted == 1)
        s.client("binary", pass_fds=(conn.fileno(),), **given(conn))
        assert len(s.core.requests) >= 6, s.core.requests
        # every request came on the connection made ahead: the program never connected
        assert s.core.connections_accepted == 1, s.core.connections_accepted


@test
def test_a_connection_made_ahead_is_only_for_the_child_it_was_given_to():
    # a process whose parent is not RUNTARA_SERVER_FD_PPID (a grandchild that inherited the
    # variables and the descriptor) leaves it to its parent and connects itself
    with Setup() as s, connected(s.sock) as conn:
        assert s.core.wait_for(lambda i: s.core.connections_accepted == 1)
        s.client("binary", pass_fds=(conn.fileno(),), **given(conn, ppid=os.getpid() + 1))
        assert len(s.core.requests) >= 6, s.core.requests
        assert s.core.connections_accepted == 2, s.core.connections_accepted


@test
def test_a_descriptor_connected_elsewhere_is_never_sent_the_token():
    # RUNTARA_SERVER_FD names a socket connected to another server (the descriptor was closed
    # and its number reused): it is not the daemon's, so nothing is written to it
    with Setup() as s:
        other = os.path.join(s.tmp, "other.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(other)
        srv.listen(1)
        with srv, connected(other) as conn:
            peer, _ = srv.accept()
            with peer:
                s.client("open", pass_fds=(conn.fileno(),), **given(conn))
                peer.setblocking(False)
                try:
                    got = peer.recv(4096)
                except BlockingIOError:
                    got = None
                assert got is None, got
        assert s.core.connections_accepted == 1, s.core.connections_accepted
        assert s.inst.status == "running"
    # nor is a descriptor that is not a socket at all
    with Setup() as s:
        r, w = os.pipe()
        try:
            s.client("open", pass_fds=(w,), RUNTARA_SERVER_FD=str(w),
                     RUNTARA_SERVER_FD_PPID=str(os.getpid()))
        finally:
            os.close(r)
            os.close(w)
        assert s.core.connections_accepted == 1, s.core.connections_accepted


@test
def test_only_the_first_client_of_a_process_looks_for_the_connection_made_ahead():
    # descriptor 3 was closed before the first runtara_open() (closefrom(), or an exec after an
    # earlier image took it close-on-exec): that client connects itself and gets number 3, which
    # a second client must not take for the runner's
    with Setup() as s:
        s.client("second-client", RUNTARA_SERVER_FD="3", RUNTARA_SERVER_FD_PPID=str(os.getpid()))
        assert s.core.connections_accepted == 2, s.core.connections_accepted


@test
def test_a_connection_made_ahead_that_the_daemon_closed_is_replaced():
    # the daemon closed it while the program started (its idle timeout): the first request
    # fails before any reply and goes again on a new connection
    with Setup() as s, connected(s.sock) as conn:
        assert s.core.wait_for(lambda i: s.core.connections_accepted == 1)
        with s.core.cond:
            for c in list(s.core.conns):
                c.shutdown(socket.SHUT_RDWR)
        s.client("binary", pass_fds=(conn.fileno(),), **given(conn))
        assert len(s.core.requests) >= 6, s.core.requests
        assert s.core.connections_accepted == 2, s.core.connections_accepted


@test
def test_daemon_gone_after_register():
    with Setup() as s:
        p = s.popen([CLIENT, "gone"])
        assert p.stdout.readline() == "ready\n"
        s.core.stop()
        out, err = p.communicate("go\n", timeout=30)
        check_output(p.args, p.returncode, out, err, 0)
        msg = parse_kv(out)["gone_error"]
        assert msg.startswith("could not send a heartbeat: "), msg


@test
def test_reconnects_while_the_daemon_restarts():
    """A daemon that restarts leaves its instances running; their calls wait for it."""
    with Setup() as s:
        p = s.popen([CLIENT, "reconnect"], RUNTARA_RECONNECT_SECS="30")
        assert p.stdout.readline() == "ready\n"
        s.core.stop()
        p.stdin.write("go\n")
        p.stdin.flush()
        # the client is retrying now: its calls fail to connect until the daemon is back
        time.sleep(0.5)
        assert p.poll() is None, "the client gave up while the daemon was away"
        n = len(s.core.requests)
        s.core.start()
        out, err = p.communicate(timeout=30)
        check_output(p.args, p.returncode, out, err, 0)
        kv = parse_kv(out)
        assert kv["heartbeat"] == "0" and kv["checkpoint"] == "0", kv
        assert [r.path.rsplit("/", 1)[-1] for r in s.core.requests[n:]] == \
            ["heartbeat", "after-restart"], s.core.requests[n:]


# ---- the transport: replies as HTTP allows them, and as it does not -----------------------------

class RawCore:
    """A unix-socket server that answers each request with bytes a test scripts, to check the
    SDK's transport against replies the fake daemon never sends. script(n, method, path, conn)
    answers the n-th request (from 0) on connection conn and returns whether to keep the
    connection open; the request's body has been read unless the script answers early."""

    def __init__(self, script, read_body=True):
        import socket
        self.tmp = tempfile.mkdtemp(prefix="rt-raw-")
        self.sock = os.path.join(self.tmp, "core.sock")
        self.script, self.read_body = script, read_body
        self.requests, self.connections = [], 0
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.sock)
        self.srv.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.srv.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = 0
                for line in lines[1:]:
                    k, _, v = line.partition(":")
                    if k.lower() == "content-length":
                        length = int(v)
                if self.read_body:
                    while len(buf) < length:
                        data = conn.recv(1 << 20)
                        if not data:
                            return
                        buf += data
                    buf = buf[length:]
                n = len(self.requests)
                self.requests.append((method, path.rsplit("/", 1)[-1]))
                if not self.script(n, method, path, conn):
                    return
        except OSError:
            pass
        finally:
            conn.close()

    def env(self, **extra):
        e = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
        e.update({"RUNTARA_INSTANCE_ID": "i-1", "RUNTARA_TENANT_ID": "acme",
                  "RUNTARA_SERVER_ADDR": self.sock, "RUNTARA_INSTANCE_TOKEN": "t0k3n",
                  "RUNTARA_ATTEMPT": "1", "RUNTARA_RECONNECT_SECS": "0"})
        e.update(extra)
        return e

    def client(self, *argv, want_rc=0, **extra):
        p = subprocess.run([CLIENT, *argv], env=self.env(**extra), cwd=self.tmp, text=True,
                           capture_output=True, timeout=60)
        check_output(p.args, p.returncode, p.stdout, p.stderr, want_rc)
        return p.stdout

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.srv.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


REGISTERED = b'{"instance_id":"i-1","attempt":1,"checkpoint_id":null}'
INPUT = '{"name":"Zoë","n":[1,2.5]}'.encode()


def send_reply(conn, body):
    """A plain 200 with a Content-Length; True: the connection stays open."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    return True


def in_pieces(conn, data, size=1):
    """Send data a few bytes at a time, each piece its own segment."""
    for i in range(0, len(data), size):
        conn.sendall(data[i:i + size])
        time.sleep(0.0005)


def chunked(body, size=7, trailer=b""):
    out = b""
    for i in range(0, len(body), size):
        piece = body[i:i + size]
        out += b"%x\r\n" % len(piece) + piece + b"\r\n"
    return out + b"0\r\n" + trailer + b"\r\n"


@test
def test_transport_chunked_replies_in_pieces():
    """Chunked bodies, a header split across reads, trailing white space in its value and an
    interim 100 reply before the real one all read as the daemon's answer; a trailer after a
    chunked body is not a header (the signal stays the header's)."""
    def script(n, method, path, conn):
        reply = b"HTTP/1.1 100 Continue\r\n\r\n" if n == 0 else b""
        body = REGISTERED if n == 0 else INPUT
        reply += (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"runtara-signal: pause \r\nTransfer-Encoding: chunked\r\n\r\n" +
                  chunked(body, trailer=b"Runtara-Signal: cancel\r\nX-Other: 1\r\n"))
        in_pieces(conn, reply, size=1 if n == 0 else 5)
        return True
    with RawCore(script) as core:
        kv = parse_kv(core.client("input"))
        assert kv["input"] == INPUT.decode(), kv
        assert core.requests == [("POST", "register"), ("GET", "input")], core.requests
        assert core.connections == 1, core.connections
        kv = parse_kv(core.client("open"))
        assert kv["signal"] == "pause", kv


def assert_input_read_on_two_connections(script):
    """register, then GET /input: answered whole, each on a connection of its own."""
    with RawCore(script) as core:
        kv = parse_kv(core.client("input"))
        assert kv["input"] == INPUT.decode(), kv
        assert core.connections == 2, core.connections


@test
def test_a_503_is_sent_again_until_the_daemon_can_answer():
    """503 means the daemon's database is unreachable (or the daemon is shutting down): the call
    waits with the reconnect backoff and goes through once the daemon answers; with
    RUNTARA_RECONNECT_SECS=0 the 503 is the call's error at once."""
    unavailable = (b'{"error":{"code":"unavailable","message":"could not read the instance: '
                   b'no connection to the server"}}')

    def script(n, method, path, conn):
        if n in (1, 2):  # the input: twice unavailable, then there
            conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n" % len(unavailable) + unavailable)
            return True
        return send_reply(conn, REGISTERED if n == 0 else INPUT)
    with RawCore(script) as core:
        kv = parse_kv(core.client("input", RUNTARA_RECONNECT_SECS="30"))
        assert kv["input"] == INPUT.decode(), kv
        assert [p for _, p in core.requests] == ["register", "input", "input", "input"], \
            core.requests
    with RawCore(script) as core:
        out = core.client("input", want_rc=1)
        assert "no connection to the server" in out, out
        assert [p for _, p in core.requests] == ["register", "input"], core.requests


@test
def test_transport_close_delimited_reply():
    """A reply without a length ends where the daemon closes the connection; the next request
    goes on a new one."""
    def script(n, method, path, conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" +
                     (REGISTERED if n == 0 else INPUT))
        return False
    assert_input_read_on_two_connections(script)


@test
def test_transport_kept_connection_closed_while_idle():
    """The daemon closes a kept-alive connection while it is idle (its idle timeout): the next
    request goes on a new connection at once, not through the reconnect backoff, which
    RUNTARA_RECONNECT_SECS=0 turns off here."""
    def script(n, method, path, conn):
        send_reply(conn, REGISTERED if n == 0 else INPUT)
        return False  # closes without saying so: the client still holds the connection
    assert_input_read_on_two_connections(script)


@test
def test_transport_not_http():
    def script(n, method, path, conn):
        conn.sendall(b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\n{}")
        return False
    with RawCore(script) as core:
        err, msg = open_failure(core.client("open", want_rc=2))
        assert err == "EIO", err
        assert msg.startswith('could not register instance "i-1": the daemon\'s reply is not '
                              "valid HTTP: "), msg


@test
def test_transport_reply_too_big():
    """A reply body past RUNTARA_REPLY_MAX (64 MiB) is refused while it arrives."""
    def script(n, method, path, conn):
        if n == 0:
            return send_reply(conn, REGISTERED)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"x" * (1 << 20)
        for _ in range(65):
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        return True
    with RawCore(script) as core:
        out = core.client("input", want_rc=1)
        assert "returned -27 (EFBIG" in out and \
            "could not read the instance's input: the reply is larger than 64 MiB" in out, out


@test
def test_transport_reply_announced_too_big():
    """A reply whose Content-Length is past RUNTARA_REPLY_MAX is refused by its headers."""
    def script(n, method, path, conn):
        if n == 0:
            return send_reply(conn, REGISTERED)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n{" % ((64 << 20) + 1))
        conn.recv(1)  # the rest never comes; held until the client hangs up
        return False
    with RawCore(script) as core:
        t0 = time.monotonic()
        out = core.client("input", want_rc=1)
        assert "returned -27 (EFBIG" in out and \
            "could not read the instance's input: the reply is larger than 64 MiB" in out, out
        assert time.monotonic() - t0 < 10, out


@test
def test_transport_early_reply_to_a_large_body():
    """The daemon refuses a body by its Content-Length, answers at once and closes without
    reading it: the client stops sending and reports the daemon's answer."""
    def script(n, method, path, conn):
        if n == 0:
            return send_reply(conn, REGISTERED)
        body = json.dumps({"error": {"code": "payload_too_large",
                                     "message": "request body of 8388608 bytes exceeds the "
                                                "limit of 1024 bytes"}}).encode()
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body)
        return False
    with RawCore(script, read_body=False) as core:
        kv = parse_kv(core.client("too-big", str(8 << 20)))
        assert kv["big_error"] == ('could not save checkpoint "big": request body of 8388608 '
                                   "bytes exceeds the limit of 1024 bytes"), kv


# ---- calls ------------------------------------------------------------------------------------

@test
def test_input():
    doc = {"name": "Zoë", "n": [1, 2.5, None], "nested": {"x": "\"quoted\""}}
    with Setup(input=doc) as s:
        kv = s.client("input")
        assert json.loads(kv["input"]) == doc, kv


@test
def test_binary_checkpoint_round_trip():
    with Setup() as s:
        kv = s.client("binary")
        want = bytes((i * 7) & 0xFF for i in range(512))
        assert b"\0" in want
        assert s.inst.checkpoints["bin"] == want
        assert s.inst.checkpoints["empty"] == b""
        puts = s.core.find("PUT", r"/checkpoints/bin$")
        assert [r.status for r in puts] == [201, 200], puts
        assert all(r.headers["content-type"] == "application/octet-stream" for r in puts)
        assert kv["missing_error"] == \
            'could not read checkpoint "missing": checkpoint "missing" does not exist', kv


@test
def test_step_runs_once():
    with Setup() as s:
        kv = s.client("step")
        assert s.inst.checkpoints == {"s1": b"result-1", "s3": b""}, s.inst.checkpoints
        assert kv["step_error"] == 'step "s2" failed: Input/output error', kv
        # registered without a checkpoint: a step's first run saves without a lookup, and the
        # repeat of a key this client saved looks it up and replays
        for key, want in (("s1", ["PUT", "GET"]), ("s2", ["GET"]), ("s3", ["PUT", "GET"])):
            got = [r.method for r in s.core.find(None, rf"/checkpoints/{key}$")]
            assert got == want, (key, got)


@test
def test_a_step_one_client_ran_replays_in_another_of_the_process():
    with Setup() as s:
        s.client("two-clients-step")
        got = [r.method for r in s.core.find(None, r"/checkpoints/shared$")]
        assert got == ["PUT", "GET"], got


@test
def test_step_replays_from_earlier_launch():
    with Setup() as s:
        s.inst.checkpoints["s1"] = b"from attempt 1"
        s.inst.checkpoint_id = "s1"  # as the daemon records it with the save
        s.inst.relaunch()
        s.client("replay", "from attempt 1")
        assert s.core.find("PUT") == [], s.core.requests
        assert len(s.core.find("GET", r"/checkpoints/s1$")) == 1, s.core.requests


@test
def test_cancel_pending_stops_step_and_acks():
    with Setup() as s:
        s.core.set_signal("cancel", {"reason": "user"})
        kv = s.client("signal", "cancel")
        assert kv["step_error"] == 'step "s1" not run: a cancel is pending', kv
        assert s.core.find("PUT") == [], s.core.requests
        [ack] = s.core.find("POST", r"/signals/ack$")
        assert ack.json() == {"type": "cancel"} and ack.status == 204, ack
        assert ack.headers["content-type"] == "application/json"
        assert s.inst.status == "cancelled" and s.inst.signal is None


@test
def test_pause_pending_stops_step_and_acks():
    with Setup() as s:
        s.core.set_signal("pause")
        s.client("signal", "pause")
        [ack] = s.core.find("POST", r"/signals/ack$")
        assert ack.json() == {"type": "pause"}, ack
        assert s.inst.status == "suspended"


@test
def test_ack_of_a_signal_no_longer_pending():
    with Setup() as s:
        s.inst.announce = "pause"
        s.client("ack-gone")
        [ack] = s.core.find("POST", r"/signals/ack$")
        assert ack.status == 409, ack
        # The client asked what is pending instead, and went on with that.
        assert s.core.requests[-1].path.endswith("/signals"), s.core.requests


@test
def test_poll_signal():
    with Setup() as s:
        assert s.client("poll", "0")["signal"] == "none"
        assert s.core.find("GET", r"/signals$")
        threading.Timer(0.3, s.core.set_signal, ("pause",)).start()
        start = time.time()
        assert s.client("poll", "10")["signal"] == "pause"
        assert time.time() - start < 8
        assert s.core.find("GET", r"/signals\?wait=10s$")
        s.core.set_signal("resume")
        assert s.client("poll", "0")["signal"] == "resume"


@test
def test_events_and_heartbeat():
    with Setup() as s:
        kv = s.client("events")
        events = [e for e in s.inst.events if e["type"] != "started"]
        # each report has a key of its own (one random prefix per client, then a count), so
        # the daemon records a report repeated after a lost reply once
        keys = [e.pop("key") for e in events]
        assert [k.split(".")[1] for k in keys] == ["1", "2"], keys
        assert re.fullmatch(r"[0-9a-f]{16}", keys[0].split(".")[0]) and \
            keys[0].split(".")[0] == keys[1].split(".")[0], keys
        assert events == [{"type": "progress", "subtype": "step",
                           "payload": {"step": 1, "ratio": 0.10}},
                          {"type": "log", "payload": None}], events
        [progress] = [r for r in s.core.find("POST", r"/events$") if b"progress" in r.body]
        assert b'"ratio": 0.10' in progress.body, progress.body  # spliced verbatim
        assert len(s.core.find("POST", r"/heartbeat$")) == 1
        assert kv["local_error"] == "could not record an event: the payload is not valid JSON", kv
        assert kv["server_error"] == \
            "could not record an event: event type must be progress, custom or log", kv
        assert len(s.core.find("POST", r"/events$")) == 3  # the invalid payload was not sent


@test
def test_complete_then_conflict():
    with Setup() as s:
        kv = s.client("complete", '{"answer": 42, "list": [1, 2]}')
        assert s.inst.status == "completed"
        assert s.inst.output == {"answer": 42, "list": [1, 2]}, s.inst.output
        assert kv["complete_error"] == \
            'could not report completion: instance "i-1" has already ended (completed)', kv


@test
def test_fail():
    with Setup() as s:
        s.client("fail")
        assert s.inst.status == "failed"
        assert s.inst.error == {"message": 'could not frobnicate "x"', "detail": {"code": 7}}


@test
def test_checkpoint_keys():
    with Setup() as s:
        kv = s.client("keys")
        assert kv["key_error"].startswith('invalid checkpoint key "bad key": expected 1 to 128'), kv
        assert sorted(s.inst.checkpoints) == ["Az09_.:-", "k" * 128, "used"], s.inst.checkpoints
        assert kv["wait_error"] == 'checkpoint "used" does not hold a signal wait\'s outcome; ' \
            'was the key used for something else?', kv


@test
def test_checkpoint_too_large():
    with Setup(max_checkpoint=1024) as s:
        kv = s.client("too-big", "2048")
        assert kv["big_error"] == \
            'could not save checkpoint "big": checkpoint is larger than 1024 bytes', kv


# ---- the examples -----------------------------------------------------------------------------

def wait_exit(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@test
def test_workflow_completes_and_replays():
    with Setup(input={"name": "ada", "steps": 3}) as s:
        s.run([WORKFLOW])
        assert s.steps_log() == ["step 1", "step 2", "step 3"]
        output = {"greeting": "hello ada", "steps": 3, "attempts": [1, 1, 1]}
        assert s.inst.status == "completed" and s.inst.output == output, s.inst.state()
        progress = [e for e in s.inst.events if e["type"] == "progress"]
        assert [e["payload"] for e in progress] == [{"step": k, "of": 3} for k in (1, 2, 3)]

        # Relaunched from the top with the same state: every step replays, nothing reruns.
        s.inst.relaunch()
        p = s.run([WORKFLOW])
        assert "attempt 2, last checkpoint step-3" in p.stderr, p.stderr
        assert s.steps_log() == ["step 1", "step 2", "step 3"]
        assert s.inst.status == "completed" and s.inst.output == output, s.inst.state()
        assert len([e for e in s.inst.events if e["type"] == "progress"]) == 3


@test
def test_workflow_killed_mid_way_resumes():
    with Setup(input={"name": "bo", "steps": 4, "step_ms": 1000}) as s:
        p = s.popen([WORKFLOW])
        assert s.core.wait_for(lambda i: "step-2" in i.checkpoints), s.inst.state()
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        assert s.steps_log() == ["step 1", "step 2"], s.steps_log()

        s.inst.relaunch()
        s.run([WORKFLOW])
        assert s.steps_log() == ["step 1", "step 2", "step 3", "step 4"], s.steps_log()
        assert s.inst.output == {"greeting": "hello bo", "steps": 4, "attempts": [1, 1, 2, 2]}


@test
def test_workflow_cancelled_mid_way():
    with Setup(input={"name": "cy", "steps": 6, "step_ms": 200}) as s:
        p = s.popen([WORKFLOW])
        assert s.core.wait_for(lambda i: "step-2" in i.checkpoints), s.inst.state()
        s.core.set_signal("cancel")
        rc, out, err = wait_exit(p)
        check_output(p.args, rc, out, err, 0)
        assert "sdk-workflow: cancel requested, stopping" in err, err
        assert s.inst.status == "cancelled" and s.inst.output is None, s.inst.state()
        assert 2 <= len(s.steps_log()) < 6, s.steps_log()
        assert len(s.core.find("POST", r"/signals/ack$")) == 1


@test
def test_workflow_cancelled_within_a_long_step():
    with Setup(input={"name": "di", "steps": 2, "step_ms": 30000}) as s:
        p = s.popen([WORKFLOW])
        assert s.core.wait_for(lambda i: any(r.path.endswith("/heartbeat")
                                             for r in s.core.requests)), s.core.requests
        s.core.set_signal("cancel")
        rc, out, err = wait_exit(p, timeout=20)
        check_output(p.args, rc, out, err, 0)
        assert s.steps_log() == [] and s.inst.status == "cancelled", s.inst.state()


@test
def test_workflow_paused_then_resumed():
    with Setup(input={"name": "ed", "steps": 4, "step_ms": 200}) as s:
        p = s.popen([WORKFLOW])
        assert s.core.wait_for(lambda i: "step-1" in i.checkpoints), s.inst.state()
        s.core.set_signal("pause")
        rc, out, err = wait_exit(p)
        check_output(p.args, rc, out, err, 0)
        assert s.inst.status == "suspended", s.inst.state()
        done = len(s.steps_log())
        assert done < 4, s.steps_log()

        s.inst.relaunch()
        s.run([WORKFLOW])
        assert s.steps_log() == [f"step {k}" for k in range(1, 5)], s.steps_log()
        assert s.inst.output["attempts"] == [1] * done + [2] * (4 - done), s.inst.output


@test
def test_workflow_invalid_input_fails_instance():
    with Setup(input={"name": "x", "steps": "three"}) as s:
        p = s.run([WORKFLOW], want_rc=1)
        assert "sdk-workflow: invalid input: " in p.stderr, p.stderr
        assert s.inst.status == "failed", s.inst.state()
        assert s.inst.error["message"].startswith("invalid input: "), s.inst.error


@test
def test_workflow_step_failure_fails_instance():
    with Setup(input={"name": "x", "steps": 2}) as s:
        os.mkdir(os.path.join(s.run_dir, "steps.log"))  # appending to it fails with EISDIR
        p = s.run([WORKFLOW], want_rc=1)
        assert 'step "step-1" failed: Is a directory' in p.stderr, p.stderr
        assert s.inst.status == "failed"
        assert s.inst.error["message"] == 'step "step-1" failed: Is a directory', s.inst.error
        assert s.inst.checkpoints == {}


@test
def test_shell_workflow():
    with Setup(input={"name": "fay"}) as s:
        p = s.run([SHELL_WORKFLOW])
        assert "checkpoint greet stored" in p.stderr, p.stderr
        assert s.inst.status == "completed" and s.inst.output == {"greeting": "hello fay"}
        s.inst.relaunch()
        p = s.run([SHELL_WORKFLOW], RUNTARA_SERVER_ADDR=s.sock)
        assert "checkpoint greet existing" in p.stderr, p.stderr
        assert s.inst.output == {"greeting": "hello fay"}
        s.inst.relaunch()
        s.core.set_signal("cancel")
        p = s.run([SHELL_WORKFLOW])
        assert s.inst.status == "cancelled", s.inst.state()


# ---- against the real daemon ----------------------------------------------------------------

class RealDaemon:
    """runtara-environment with sdk-workflow registered as a native image; skipped (None) when
    the daemon is not built."""

    def __init__(self):
        from harness import DAEMON, Daemon
        self.d = Daemon().start() if os.path.exists(DAEMON) else None
        if self.d:
            with open(WORKFLOW, "rb") as f:
                r = self.d.upload("acme", "sdk-workflow", f.read(), extra="&runner_type=native")
            assert r.status == 201, r
            self.image = r.json()["image_id"]

    def __enter__(self):
        return self if self.d else None

    def __exit__(self, *exc):
        if self.d:
            self.d.cleanup()

    def call(self, method, path, want=200, **kw):
        r = self.d.request(method, "/api/v1/instances" + path, **kw)
        assert r.status == want, r
        return r.json() if r.body else None

    def start(self, input):
        return self.call("POST", "", 201, json_body={"image_id": self.image,
                                                     "input": input})["instance_id"]

    def wait(self, iid, predicate, timeout=30):
        deadline = deadline_in(timeout)
        while time.monotonic() < deadline:
            doc = self.call("GET", "/" + iid)
            if predicate(doc):
                return doc
            time.sleep(0.05)
        raise AssertionError(f"instance {iid} did not get there: {doc}")

    def steps_log(self, iid):
        with open(os.path.join(self.d.data_dir, "tenants", "acme", "runs", iid, "steps.log")) as f:
            return f.read().splitlines()


@test
def test_real_daemon_pause_resume_replays():
    with RealDaemon() as rd:
        if not rd:
            print("# SKIP runtara-environment is not built")
            return
        iid = rd.start({"name": "ed", "steps": 4, "step_ms": 300})
        rd.wait(iid, lambda j: j["checkpoint_id"] == "step-1")
        rd.call("POST", f"/{iid}/signals", 202, json_body={"type": "pause"})
        doc = rd.wait(iid, lambda j: j["status"] != "running")
        assert (doc["status"], doc["termination_reason"]) == ("suspended", "paused"), doc
        done = len(rd.steps_log(iid))
        # Resume only once the paused process has exited: a resume that arrives before the
        # supervisor has seen the exit leaves the instance pending, never relaunched (reported).
        rd.wait(iid, lambda j: any(e["type"] == "exited" for e in
                                   rd.call("GET", f"/{iid}/events")["events"]))
        rd.call("POST", f"/{iid}/resume", 202)
        doc = rd.wait(iid, lambda j: j["status"] not in ("suspended", "pending", "running"))
        assert doc["status"] == "completed" and doc["attempt"] == 2, doc
        assert doc["output"] == {"greeting": "hello ed", "steps": 4,
                                 "attempts": [1] * done + [2] * (4 - done)}, doc
        assert rd.steps_log(iid) == [f"step {k}" for k in range(1, 5)]


@test
def test_real_daemon_cancel_within_a_long_step():
    with RealDaemon() as rd:
        if not rd:
            print("# SKIP runtara-environment is not built")
            return
        iid = rd.start({"name": "di", "steps": 2, "step_ms": 30000})
        rd.wait(iid, lambda j: j["heartbeat_at"] is not None)
        rd.call("POST", f"/{iid}/signals", 202, json_body={"type": "cancel"})
        # The ack ends the instance; the exit of the process is recorded a moment later.
        doc = rd.wait(iid, lambda j: j["exit_code"] is not None, timeout=10)
        assert (doc["status"], doc["exit_code"]) == ("cancelled", 0), doc
        assert not os.path.exists(os.path.join(rd.d.data_dir, "tenants", "acme", "runs", iid, "steps.log"))


@test
def test_real_daemon_refuses_a_checkpoint_too_large():
    """The daemon refuses a checkpoint by its Content-Length and closes the connection without
    reading the body: the program hears the daemon's 413, not a lost connection."""
    from harness import DAEMON, Daemon
    if not os.path.exists(DAEMON):
        print("# SKIP runtara-environment is not built")
        return
    d = Daemon(env={"RUNTARA_MAX_CHECKPOINT_SIZE": "64K"}).start()
    try:
        with open(CLIENT, "rb") as f:
            r = d.upload("acme", "sdk-client", f.read(), extra="&runner_type=native")
        assert r.status == 201, r
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": r.json()["image_id"], "instance_id": "big",
            "env": {"TEST_SDK_SCENARIO": "too-big", "TEST_SDK_ARG": str(8 << 20),
                    "LD_LIBRARY_PATH": os.path.dirname(LIB)}})
        assert r.status == 201, r
        deadline = deadline_in(30)
        while time.monotonic() < deadline:
            doc = d.request("GET", "/api/v1/instances/big").json()
            if doc["exit_code"] is not None:
                break
            time.sleep(0.05)
        logs = d.request("GET", "/api/v1/instances/big/logs").body.decode()
        assert doc["exit_code"] == 0, (doc, logs)
        assert 'big_error=could not save checkpoint "big": request body of 8388608 bytes ' \
            "exceeds the limit of 65536 bytes\n" in logs, logs
    finally:
        d.cleanup()

# ---- packaging --------------------------------------------------------------------------------

@test
def test_exported_symbols_match_header():
    with open(HEADER) as f:
        declared = set(re.findall(r"\b(runtara_[a-z_]+)\(", f.read()))
    with open(os.path.join(ROOT, "src/sdk/libruntara.sym")) as f:
        listed = set(re.findall(r"\b(runtara_[a-z_]+);", f.read()))
    nm = subprocess.run(["nm", "-D", "--defined-only", LIB], capture_output=True, text=True,
                        check=True).stdout
    exported = set(re.findall(r" T (\w+)@", nm))
    assert declared == listed == exported, (declared ^ listed, listed ^ exported)


@test
def test_pkg_config_uninstalled():
    if not shutil.which("pkg-config"):
        print("# SKIP pkg-config is not installed")
        return
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(BUILD, "meson-uninstalled"))
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "runtara"], env=env,
                           capture_output=True, text=True, check=True).stdout.split()
    assert "-lruntara" in flags and f"-I{ROOT}/src/sdk" in flags, flags
    assert any(f == "-L" + os.path.join(BUILD, "src/sdk") for f in flags), flags
    # The build line of docs/sdk.md, against the build tree.
    with tempfile.TemporaryDirectory() as tmp:
        cmd = (f"cc -Wall -Wextra -Werror -o {tmp}/wf {ROOT}/examples/sdk-workflow/main.c "
               "$(pkg-config --cflags --libs runtara jansson)")
        p = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        # The static line: the program then needs only jansson and libc at run time (and the
        # sanitizer's runtime, when this build has one: its objects call into it).
        with open(os.path.join(BUILD, "meson-info", "intro-buildoptions.json")) as f:
            sanitize = next(o["value"] for o in json.load(f) if o["name"] == "b_sanitize")
        san = f"-fsanitize={sanitize}" if sanitize != "none" else ""
        cmd = (f"cc -Wall -Wextra -Werror {san} -o {tmp}/wf-static "
               f"{ROOT}/examples/sdk-workflow/main.c $(pkg-config --cflags runtara) "
               f"-L{BUILD}/src/sdk -Wl,-Bstatic -lruntara -lhttp_parser "
               "-Wl,-Bdynamic $(pkg-config --libs jansson) -pthread")
        p = subprocess.run(cmd, shell=True, env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        libs = subprocess.run(["readelf", "-d", f"{tmp}/wf-static"], capture_output=True,
                              text=True, check=True).stdout
        needed = sorted(n.split(".so")[0] for n in re.findall(r"\(NEEDED\).*\[(.+?)\]", libs))
        runtime = {"none": [], "address,undefined": ["libasan", "libubsan"],
                   "thread": ["libtsan"]}[sanitize]
        needed = [n for n in needed if n not in runtime and not n.startswith("ld-linux")]
        assert needed == ["libc", "libjansson"], needed


@test
def test_docs_show_the_example_as_built():
    with open(os.path.join(ROOT, "docs/sdk.md")) as f:
        doc = f.read()
    with open(os.path.join(ROOT, "examples/sdk-workflow/main.c")) as f:
        example = f.read()
    assert "```c\n" + example + "```\n" in doc, "docs/sdk.md must show examples/sdk-workflow/main.c"

if __name__ == "__main__":
    main()
