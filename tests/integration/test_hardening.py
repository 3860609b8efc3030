"""Hardening: what a hostile or careless client sends must never take the daemon down, and every
reply it gets is well-formed. Each test drives the real daemon with raw bytes on a socket, since
http.client refuses to send most of what is tested here."""
import json
import os
import resource
import shutil
import socket
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Daemon, deadline_in, error_of, keyed_daemon, main, run_ctl,  # noqa: E402
                     test)


def raw_exchange(address, data, timeout=30):
    """Send data on a new connection (TCP (host, port) or a unix socket path) and read until the
    server closes or one whole response (by Content-Length) is in. Returns (status, headers dict
    with lower-case names, body bytes)."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise AssertionError(f"connection closed without a response to {data[:80]!r}")
            buf += chunk
        head, body = buf.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(b":")
            headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
        n = int(headers.get("content-length", "0"))
        while len(body) < n:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


class Reply:
    """Just enough of harness.Response for error_of()."""

    def __init__(self, body):
        self.body = body

    def json(self):
        # strict: the body must be valid UTF-8 and valid JSON
        return json.loads(self.body.decode("utf-8", errors="strict"))


def check_error_reply(status, body, want_status, what):
    assert status == want_status, f"{what}: {status} {body[:200]!r}"
    err = error_of(Reply(body))
    assert len(err["message"]) <= 1100, f"{what}: message of {len(err['message'])} characters"
    return err


# Every place of a request that holds bytes the daemon echoes into an error message: the path,
# the method, a query parameter's name and value, Content-Type. Each with bytes that are not UTF-8.
BAD_REQUESTS = [
    (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n", 404, "\ufffd"),
    (b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n", 404, "\ufffd"),
    (b"GET /api/v1/instances?st%ffatus=x HTTP/1.1\r\nHost: x\r\n\r\n", 400, "st\ufffdatus"),
    (b"GET /api/v1/instances?status=%c0%af HTTP/1.1\r\nHost: x\r\n\r\n", 400, "\ufffd\ufffd"),
    (b"GET /api/v1/images/%ed%a0%80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, None),
    # not a method token: the connection gate answers before any route is looked up
    (b"G\xffT /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "not an HTTP/1.1 request"),
    (b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\nContent-Type: \xff\xfe\r\n"
     b"Content-Length: 2\r\n\r\n{}", 415, "\ufffd\ufffd"),
]


@test
def invalid_utf8_anywhere_in_a_request_gets_an_error_and_the_daemon_lives():
    d = Daemon().start()
    try:
        for raw, want, echoed in BAD_REQUESTS:
            status, headers, body = raw_exchange(("127.0.0.1", d.port), raw)
            err = check_error_reply(status, body, want, raw[:60])
            if echoed:
                assert echoed in err["message"], (raw[:60], err)
            assert headers.get("content-type") == "application/json", headers
            assert d.request("GET", "/api/v1/health").status == 200, raw[:60]
        # the instance socket, without a token: the same bytes, the same kind of answer
        sock = os.path.join(d.data_dir, "core.sock")
        for raw in (b"GET /%ff HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET /api/v1/%ff%fe/checkpoints HTTP/1.1\r\nHost: x\r\n\r\n"):
            status, _, body = raw_exchange(sock, raw)
            assert status in (401, 404), (raw, status, body)
            error_of(Reply(body))
        # the instance socket has the same gate in front of it
        status, _, body = raw_exchange(sock, b"G\xffT /api/v1/instances/x/input HTTP/1.1\r\n"
                                             b"Host: x\r\n\r\n")
        assert status == 400, (status, body)
        assert "not an HTTP/1.1 request" in error_of(Reply(body))["message"], body
        assert d.proc.poll() is None, d.logs()[-2000:]
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


@test
def an_error_echoes_a_bounded_part_of_a_long_path():
    d = Daemon().start()
    try:
        path = "/" + "%ff" * 3000  # decodes to 3,000 invalid bytes
        status, _, body = raw_exchange(("127.0.0.1", d.port),
                                       f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        err = check_error_reply(status, body, 404, "long path")
        assert "..." in err["message"], err
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


@test
def image_text_that_jansson_would_refuse_is_refused_at_the_door():
    """A description or label value may be any UTF-8 text, but only valid UTF-8: a surrogate
    (ED A0 80) or a code point past U+10FFFF (F4 90 80 80) was once accepted, stored, and then
    made the image invisible in lists (the row's document could not be built)."""
    d = Daemon().start()
    try:
        for extra in ("&description=%ed%a0%80", "&label=a=%f4%90%80%80",
                      "&description=%c0%80", "&label=a=b%ff"):
            r = d.upload("t", "img", b"\x7fELF", extra=extra)
            err = error_of(r)
            assert r.status == 400, (extra, r)
            assert "UTF-8" in err["message"], (extra, err)
        r = d.upload("t", "img", b"\x7fELF", extra="&description=caf%c3%a9&label=a=%f0%9f%98%80")
        assert r.status == 201, r
        listed = d.request("GET", "/api/v1/images?tenant_id=t").json()["images"]
        assert [i["description"] for i in listed] == ["caf\u00e9"], listed
        assert listed[0]["labels"] == {"a": "\U0001F600"}, listed
    finally:
        d.cleanup()


def read_all(sock):
    buf = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return buf
        buf += chunk


@test
def a_request_with_both_transfer_encoding_and_content_length_is_refused_and_closed():
    """RFC 9112 section 6.1: the request is refused and the connection closed, so whatever the
    two framings disagree about (here a second request hidden in the body) is never served."""
    d = Daemon().start()
    try:
        smuggled = (b"POST /api/v1/instances HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    b"Content-Length: 4\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
                    b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        with socket.create_connection(("127.0.0.1", d.port), timeout=30) as s:
            s.sendall(smuggled)
            data = read_all(s)  # ends only because the daemon closes the connection
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), data
        assert b"connection: close" in head.lower(), head
        err = error_of(Reply(body))
        assert "Transfer-Encoding and Content-Length" in err["message"], err
        assert data.count(b"HTTP/1.1 ") == 1, data  # the hidden request got no answer
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


@test
def a_tenant_id_is_checked_before_it_is_used_or_echoed():
    d = Daemon().start()
    try:
        huge = "a" * 5000
        for tenant in (huge, "../x", "a b", "\u00e9"):
            r = d.request("POST", "/api/v1/instances",
                          json_body={"image": "wf", "tenant_id": tenant})
            err = error_of(r)
            assert r.status == 400 and err["message"].startswith("invalid tenant_id"), (tenant, r)
            assert len(r.body) < 400, r
        r = d.request("GET", "/api/v1/images?tenant_id=" + huge)
        assert r.status == 400 and len(r.body) < 400, r
    finally:
        d.cleanup()


QUICK = b"#!/bin/sh\necho \"$RUNTARA_TENANT_ID\" >&2\necho '\"ok\"' > output.json\n"
LINGERS = b"#!/bin/sh\necho lingering >&2\ntouch started\nwhile [ ! -e go ]; do sleep 0.02; done\n"


def native_image(d, tenant, body, name="wf", key=None):
    r = d.upload(tenant, name, body, extra="&runner_type=native", key=key)
    assert r.status == 201, r
    return r.json()["image_id"]


def start(d, tenant, img, iid):
    r = d.request("POST", "/api/v1/instances",
                  json_body={"image_id": img, "tenant_id": tenant, "instance_id": iid})
    assert r.status == 201, r


def settle(d, iid, timeout=60):
    deadline = deadline_in(timeout)
    while time.monotonic() < deadline:
        inst = d.request("GET", f"/api/v1/instances/{iid}?wait=5s").json()
        if inst["status"] in ("completed", "failed", "cancelled"):
            return inst
    raise AssertionError(f"{iid} did not settle: {inst}")


def wait_for(cond, what, timeout=60):
    deadline = deadline_in(timeout)
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def run_dir(d, tenant, iid):
    return os.path.join(d.data_dir, "tenants", tenant, "runs", iid)


# Names of the daemon's own files and directories in DATA_DIR, and of the tenants' namespace.
DAEMON_NAMES = ["images", "tenants", "runtara.db", "runtara.db-wal", "core.sock", "runtara.lock",
                "runs"]


@test
def tenants_named_like_the_daemons_files_are_tenants_like_any_other():
    d = Daemon().start()
    try:
        for t in DAEMON_NAMES:
            start(d, t, native_image(d, t, QUICK), f"i-{t}")
        for t in DAEMON_NAMES:
            inst = settle(d, f"i-{t}")
            assert (inst["status"], inst["output"], inst["attempt"]) == ("completed", "ok", 1), inst
            assert os.path.isfile(os.path.join(run_dir(d, t, f"i-{t}"), "output.json")), t
            logs = d.request("GET", f"/api/v1/instances/i-{t}/logs")
            assert logs.status == 200 and logs.body == f"{t}\n".encode(), (t, logs)
        # a restart sweeps interrupted uploads in images/: nothing of tenant "images" is there
        d.stop()
        d.start()
        for t in DAEMON_NAMES:
            inst = d.request("GET", f"/api/v1/instances/i-{t}").json()
            assert (inst["status"], inst["attempt"]) == ("completed", 1), inst
            assert os.path.isfile(os.path.join(run_dir(d, t, f"i-{t}"), "output.json")), t
        images = d.request("GET", "/api/v1/images?tenant_id=images").json()["images"]
        assert len(images) == 1, images
        assert d.request("GET", "/api/v1/health").json()["status"] == "ok"
    finally:
        d.cleanup()


@test
def an_output_json_that_is_a_symlink_is_not_followed():
    """A program ends by exiting 0 with output.json a symlink to another tenant's input: the
    daemon does not read through it, so nothing of the other tenant becomes this output."""
    d = Daemon().start()
    try:
        start(d, "beta", native_image(d, "beta", LINGERS), "secret")
        wait_for(lambda: os.path.exists(os.path.join(run_dir(d, "beta", "secret"), "started")),
                 "the other tenant's instance to start")
        target = os.path.join(run_dir(d, "beta", "secret"), "input.json")
        body = f"#!/bin/sh\nln -s {target} output.json\n".encode()
        start(d, "acme", native_image(d, "acme", body), "thief")
        inst = settle(d, "thief")
        assert (inst["status"], inst["output"]) == ("completed", None), inst
        open(os.path.join(run_dir(d, "beta", "secret"), "go"), "w").close()
        settle(d, "secret")
    finally:
        d.cleanup()


def to_old_layout(data_dir):
    """Rearrange DATA_DIR as the versions before DATA_DIR/tenants/ had it: DATA_DIR/<tenant>/runs/."""
    new = os.path.join(data_dir, "tenants")
    aside = os.path.join(data_dir, "tenants-aside")
    os.rename(new, aside)
    for t in os.listdir(aside):
        if t.startswith("."):
            continue
        os.makedirs(os.path.join(data_dir, t), exist_ok=True)
        os.rename(os.path.join(aside, t, "runs"), os.path.join(data_dir, t, "runs"))
    shutil.rmtree(aside)


@test
def run_directories_of_the_old_layout_move_into_tenants_at_start():
    """A data directory of the layout DATA_DIR/<tenant>/runs/ is moved at start: finished
    instances keep their logs, and an instance whose process still runs (the daemon was killed)
    is taken over in its moved directory, its process none the wiser."""
    d = Daemon().start()
    try:
        for t in ("acme", "images", "tenants"):
            start(d, t, native_image(d, t, QUICK), f"done-{t}")
            settle(d, f"done-{t}")
        start(d, "acme", native_image(d, "acme", LINGERS, name="lingers"), "lingers")
        wait_for(lambda: os.path.exists(os.path.join(run_dir(d, "acme", "lingers"), "started")),
                 "the lingering instance to start")
        d.kill9()
        to_old_layout(d.data_dir)
        assert os.path.isdir(os.path.join(d.data_dir, "tenants", "runs", "done-tenants"))
        d.start()
        logs = d.wait_log('moved the run directories of 3 tenants', "1 processes still running")
        for t in ("acme", "images", "tenants"):
            r = d.request("GET", f"/api/v1/instances/done-{t}/logs")
            assert r.status == 200 and r.body == f"{t}\n".encode(), (t, r)
            assert os.path.isfile(os.path.join(run_dir(d, t, f"done-{t}"), "output.json")), t
        assert not os.path.exists(os.path.join(d.data_dir, "acme")), os.listdir(d.data_dir)
        assert sorted(os.listdir(os.path.join(d.data_dir, "images"))) == \
            sorted(i["image_id"] for t in ("acme", "images", "tenants") for i in
                   d.request("GET", f"/api/v1/images?tenant_id={t}").json()["images"])
        open(os.path.join(run_dir(d, "acme", "lingers"), "go"), "w").close()
        inst = settle(d, "lingers")
        assert (inst["status"], inst["attempt"]) == ("completed", 1), inst
        # done once: the next start moves nothing
        d.stop()
        d.start()
        assert d.logs().count("moved the run directories") == 1, logs[-2000:]
    finally:
        d.cleanup()


# Reports its tenant as its output, using its own token and the instance API.
REPORTS_TENANT = b"""#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&4)"  # its pipe (RUNTARA_INSTANCE_TOKEN_FD)
sock=${RUNTARA_SERVER_ADDR#unix:}
curl -sf --unix-socket "$sock" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \\
    -H 'Content-Type: application/json' -X POST \\
    -d "{\\"output\\": \\"$RUNTARA_TENANT_ID\\"}" \\
    "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/completed" >/dev/null
"""


@test
def instance_ids_are_per_tenant():
    """The same id in two tenants is two instances: starting an id another tenant uses is a 201
    like any unused id (a 409 told whether it existed), each tenant's key sees its own, each
    program's token acts on its own, and an admin names the tenant when both have the id."""
    d, keys = keyed_daemon()
    try:
        for t in ("acme", "beta"):
            img = native_image(d, t, REPORTS_TENANT, key=keys[t])
            r = d.request("POST", "/api/v1/instances", key=keys[t],
                          json_body={"image_id": img, "instance_id": "order-1"})
            assert r.status == 201, (t, r)
            assert r.header("Location") == f"/api/v1/instances/order-1?tenant_id={t}", r.headers
        for t in ("acme", "beta"):
            deadline = deadline_in(60)
            while True:
                inst = d.request("GET", "/api/v1/instances/order-1?wait=5s", key=keys[t]).json()
                if inst["status"] not in ("pending", "running") or time.monotonic() > deadline:
                    break
            assert (inst["tenant_id"], inst["status"], inst["output"]) == (t, "completed", t), inst
            # a repeat of the same start is idempotent within the tenant
            assert d.request("GET", "/api/v1/instances", key=keys[t]).json()["total"] == 1
            r = d.request("GET", f"/api/v1/instances/order-1/events?tenant_id={t}", key=keys[t])
            assert r.status == 200 and r.json()["events"], r
        # another tenant named by a tenant key: refused
        r = d.request("GET", "/api/v1/instances/order-1?tenant_id=beta", key=keys["acme"])
        assert r.status == 403, r
        # an admin: ambiguous without the tenant, exact with it
        r = d.request("GET", "/api/v1/instances/order-1", key=keys["ops"])
        assert r.status == 400 and "tenant_id" in error_of(r)["message"], r
        for t in ("acme", "beta"):
            r = d.request("GET", f"/api/v1/instances/order-1?tenant_id={t}", key=keys["ops"])
            assert r.status == 200 and r.json()["tenant_id"] == t, r
        r = d.request("GET", "/api/v1/instances/order-1?tenant_id=gamma", key=keys["ops"])
        assert r.status == 404, r
        # runtara-ctl names the tenant as the daemon's messages do: TENANT/ID
        for t in ("acme", "beta"):
            p = run_ctl(d, "--json", "instances", "get", f"{t}/order-1", key=keys["ops"])
            assert p.returncode == 0 and json.loads(p.stdout)["tenant_id"] == t, p
            p = run_ctl(d, "--json", "instances", "events", f"{t}/order-1", key=keys["ops"])
            assert p.returncode == 0, p
        p = run_ctl(d, "instances", "get", "order-1", key=keys["ops"])
        assert p.returncode == 1 and "tenant_id" in p.stderr, p
        p = run_ctl(d, "instances", "get", "../order-1", key=keys["ops"])
        assert p.returncode == 2 and "invalid tenant" in p.stderr, p
        # an id only one tenant has needs no tenant
        img = native_image(d, "acme", REPORTS_TENANT, name="solo", key=keys["acme"])
        r = d.request("POST", "/api/v1/instances", key=keys["acme"],
                      json_body={"image_id": img, "instance_id": "solo-1"})
        assert r.status == 201, r
        r = d.request("GET", "/api/v1/instances/solo-1", key=keys["ops"])
        assert r.status == 200 and r.json()["tenant_id"] == "acme", r
        # the other tenant's same start is not a conflict with it either
        r = d.request("GET", "/api/v1/instances/solo-1", key=keys["beta"])
        assert r.status == 404, r
    finally:
        d.cleanup()


@test
def a_long_poll_on_an_instance_of_the_longest_key_is_woken():
    """A tenant and an instance id of 128 characters each: the long-poll parked under that key
    is woken by the instance's end, not left parked until its 60 s deadline."""
    d = Daemon().start()

    def waiting():
        return "runtara_long_polls_waiting 1\n" in d.request("GET", "/metrics").body.decode()
    try:
        tenant, iid = "t" * 128, "i" * 128
        start(d, tenant, native_image(d, tenant, LINGERS), iid)
        wait_for(lambda: os.path.exists(os.path.join(run_dir(d, tenant, iid), "started")),
                 "the instance to start")
        with socket.create_connection(("127.0.0.1", d.port), timeout=120) as s:
            s.sendall(f"GET /api/v1/instances/{iid}?wait=60s HTTP/1.1\r\nHost: x\r\n"
                      f"Connection: close\r\n\r\n".encode())
            wait_for(waiting, "the long poll to park")
            open(os.path.join(run_dir(d, tenant, iid), "go"), "w").close()
            settle(d, iid)
            # woken by the end: no longer parked (a key cut short would stay parked 60 s)
            wait_for(lambda: not waiting(), "the long poll to be woken", timeout=5)
            doc = json.loads(read_all(s).partition(b"\r\n\r\n")[2])
        assert doc["status"] == "completed", doc
    finally:
        d.cleanup()


@test
def bytes_that_are_not_http_are_answered_by_the_gate_and_closed():
    """A TLS handshake (or any binary) sent to the plain port gets a 400 from the gate at once and
    its connection closed: handed to the server it would hold a connection until the idle
    timeout, renewed by every byte it dribbles."""
    d = Daemon(env={"RUNTARA_HTTP_IDLE_TIMEOUT_SECS": "3600"}).start()
    try:
        for first in (b"\x16\x03\x01\x02\x00\x01", b"\x01", b"GE\x00T / HTTP/1.1"):
            status, headers, body = raw_exchange(("127.0.0.1", d.port), first)
            check_error_reply(status, body, 400, first)
            assert headers.get("connection") == "close", headers
        metrics = d.request("GET", "/metrics").body.decode()
        assert 'runtara_http_connections_refused_total{reason="not_http"} 3' in metrics, metrics
    finally:
        d.cleanup()


MIGRATIONS = os.path.join(os.path.dirname(__file__), "..", "..", "src", "store", "migrations",
                          "sqlite")


@test
def a_database_of_global_instance_ids_is_migrated_with_its_rows():
    """A store at schema 5 (instance ids global) gets the instance key on every row and its
    children, and the daemon serves them as before."""
    d = Daemon()
    try:
        os.makedirs(d.data_dir)
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
                   "name TEXT NOT NULL, applied_at INTEGER NOT NULL)")
        for name in sorted(os.listdir(MIGRATIONS))[:5]:
            with open(os.path.join(MIGRATIONS, name)) as f:
                db.executescript(f.read())
            db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)",
                       (int(name[:3]), name[4:-4]))
        db.execute("INSERT INTO images (image_id, tenant_id, name, version, runner_type, sha256, "
                   "size_bytes, created_at) VALUES ('img-1', 'acme', 'wf', 1, 'native', ?, 1, 1)",
                   ("0" * 64,))
        now = int(time.time() * 1e6)  # recent: retention would delete an old one at start
        db.execute("INSERT INTO instances (instance_id, tenant_id, image_id, status, created_at, "
                   "updated_at, output, finished_at, attempt, exit_code) "
                   "VALUES ('old-1', 'acme', 'img-1', 'completed', ?, ?, '7', ?, 1, 0)",
                   (now, now, now))
        # a newer row retention deleted: its seq must not be handed out again
        db.execute("INSERT INTO instances (instance_id, tenant_id, image_id, status, created_at) "
                   "VALUES ('purged', 'acme', 'img-1', 'completed', 1)")
        db.execute("DELETE FROM instances WHERE instance_id = 'purged'")
        old_seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'instances'"
                             ).fetchone()[0]
        db.execute("INSERT INTO checkpoints (instance_id, key, data, created_at) "
                   "VALUES ('old-1', 'step-1', x'6869', 2)")
        db.execute("INSERT INTO events (instance_id, type, payload, created_at, request_key) "
                   "VALUES ('old-1', 'custom', '1', 2, 'k')")
        db.execute("INSERT INTO custom_signals (instance_id, wait_key, payload, created_at) "
                   "VALUES ('old-1', 'approval', 'true', 2)")
        db.commit()
        db.close()
        d.start()
        r = d.request("GET", "/api/v1/instances/old-1?tenant_id=acme")
        assert r.status == 200, (r, d.logs()[-2000:])
        inst = r.json()
        assert (inst["status"], inst["output"], inst["exit_code"]) == ("completed", 7, 0), inst
        cps = d.request("GET", "/api/v1/instances/old-1/checkpoints").json()["checkpoints"]
        assert [(c["key"], c["size_bytes"]) for c in cps] == [("step-1", 2)], cps
        r = d.request("GET", "/api/v1/instances/old-1/checkpoints/step-1")
        assert r.status == 200 and r.body == b"hi", r
        evs = d.request("GET", "/api/v1/instances/old-1/events").json()["events"]
        assert [(e["type"], e["payload"]) for e in evs] == [("custom", 1)], evs
        d.stop()
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        rows = db.execute("SELECT instance_key FROM custom_signals").fetchall()
        new_seq = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'instances'"
                             ).fetchone()[0]
        assert new_seq >= old_seq == 2, (new_seq, old_seq)
        version = db.execute("SELECT MAX(version) FROM schema_migrations").fetchone()[0]
        db.close()
        assert rows == [("acme/old-1",)] and version >= 6, (rows, version)
    finally:
        d.cleanup()


# ---- slow clients: the connection gate ----------------------------------------------------------
# A client that opens connections and never finishes a request must not take the server's
# connections: they wait at the gate, per client address within a limit, each until its header
# deadline. Linux routes all of 127.0.0.0/8 to loopback, so a test can be many client addresses.

def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    assert soft >= need, f"open files limit {soft} of this test is below the {need} it needs"


def daemon_nofile(d):
    with open(f"/proc/{d.proc.pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                return int(line.split()[3])
    raise AssertionError("no open files limit in /proc/PID/limits")


def connect_from(d, source, data=b""):
    """A connection to the daemon from the loopback address source, having sent data."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.settimeout(60)
    s.bind((source, 0))
    s.connect(("127.0.0.1", d.port))
    if data:
        s.sendall(data)
    return s


def is_open(s):
    """Whether the server still holds s open (nothing to read and no end of stream)."""
    timeout = s.gettimeout()
    s.settimeout(0)  # with a timeout, Python would wait for data instead
    try:
        return s.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except ConnectionResetError:
        return False
    finally:
        s.settimeout(timeout)


def wait_closed(s, timeout=60):
    """Wait for the server to close s; returns what it sent before (b"" for a plain close)."""
    s.settimeout(timeout)
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return got
            got += chunk
    except ConnectionResetError:
        return got
    except socket.timeout:
        raise AssertionError(f"the server kept the connection open for {timeout} s")


def metrics(d):
    out = {}
    for line in d.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("runtara_http_connections_"):
            k, v = line.rsplit(" ", 1)
            out[k] = float(v)
    return out


def refused(d, reason):
    return metrics(d)[f'runtara_http_connections_refused_total{{reason="{reason}"}}']


def wait_waiting(d, n, timeout=60):
    """Wait until n connections wait at the gate for their headers."""
    deadline = time.monotonic() + timeout
    while True:
        got = metrics(d)["runtara_http_connections_waiting"]
        if got == n:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{got} connections wait at the gate, not {n}")
        time.sleep(0.02)


def health(d, source="127.0.0.1"):
    return raw_exchange_from(d, source, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")[0]


def raw_exchange_from(d, source, data):
    s = connect_from(d, source, data)
    with s:
        got = wait_closed_or_reply(s)
    return parse_reply(got)


def wait_closed_or_reply(s):
    """Read one whole response (by Content-Length), or up to the server's close."""
    buf = b""
    while True:
        if b"\r\n\r\n" in buf:
            head, body = buf.split(b"\r\n\r\n", 1)
            n = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    n = int(v)
            if len(body) >= n:
                return buf
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def parse_reply(buf):
    if not buf:
        return None, {}, b""
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(b":")
        headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
    return int(lines[0].split()[1]), headers, body


@test
def two_thousand_half_open_connections_leave_health_answering():
    n_conns, per_address = 2000, 64
    sources = [f"127.0.0.{i}" for i in range(2, 2 + -(-n_conns // (per_address - 4)))]
    raise_nofile(n_conns + 200)
    # More half-open connections than RUNTARA_HTTP_MAX_CONNECTIONS (1024), each address near its
    # limit; a header deadline no machine reaches within the test.
    d = Daemon(env={"RUNTARA_HTTP_MAX_CONNECTIONS_PER_ADDRESS": str(per_address),
                    "RUNTARA_HTTP_HEADER_TIMEOUT_SECS": "3600"}).start()
    held = []
    try:
        assert daemon_nofile(d) >= n_conns + 200, daemon_nofile(d)
        d.wait_log("open files limit")
        t0 = time.monotonic()
        for i in range(n_conns):
            # nothing at all, half a request line, or a request line and half the headers
            data = (b"", b"GET /api/v1/hea", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n")[i % 3]
            held.append(connect_from(d, sources[i % len(sources)], data))
        wait_waiting(d, n_conns)
        opened = time.monotonic() - t0
        t1 = time.monotonic()
        for _ in range(50):
            assert d.request("GET", "/api/v1/health").status == 200
            assert d.request("GET", "/metrics").status == 200
        probes = time.monotonic() - t1
        closed = [i for i, s in enumerate(held) if not is_open(s)]
        assert not closed, f"{len(closed)} held connections were closed, first {closed[:5]}"
        m = metrics(d)
        assert all(v == 0 for k, v in m.items() if "refused" in k), m
        print(f"# {n_conns} half-open connections from {len(sources)} addresses held in "
              f"{opened:.2f} s; 50 health and 50 metrics requests meanwhile in {probes:.2f} s")
        for s in held:
            s.close()
        held = []
        wait_waiting(d, 0)
        assert d.proc.poll() is None
    finally:
        for s in held:
            s.close()
        d.cleanup()


@test
def the_per_address_limit_refuses_the_excess_of_one_address():
    d = Daemon(env={"RUNTARA_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "8",
                    "RUNTARA_HTTP_HEADER_TIMEOUT_SECS": "3600"}).start()
    held = []
    try:
        held = [connect_from(d, "127.0.0.7") for _ in range(8)]
        wait_waiting(d, 8)
        extra = connect_from(d, "127.0.0.7", b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert wait_closed(extra) == b"", "the connection over the limit was answered"
        extra.close()
        assert refused(d, "per_address") >= 1
        assert all(is_open(s) for s in held)
        assert health(d, "127.0.0.8") == 200  # other addresses are not affected
        assert d.request("GET", "/api/v1/health").status == 200
        held.pop().close()  # one less: that address may connect again
        wait_waiting(d, 7)
        assert health(d, "127.0.0.7") == 200
    finally:
        for s in held:
            s.close()
        d.cleanup()


@test
def the_header_deadline_closes_a_connection_that_dribbles():
    timeout = 2
    d = Daemon(env={"RUNTARA_HTTP_HEADER_TIMEOUT_SECS": str(timeout)}).start()
    try:
        silent = connect_from(d, "127.0.0.1")
        s = connect_from(d, "127.0.0.1", b"GET /api/v1/health HTTP/1.1\r\n")
        t0 = time.monotonic()
        # One byte every 0.2 s: an idle timeout would never fire, the deadline must. Bounded far
        # beyond the deadline, for a slow machine.
        closed_at = None
        for _ in range(int(60 * timeout / 0.2)):
            try:
                s.send(b"X-Slow: y\r\n"[_ % 11:_ % 11 + 1])
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - t0
                break
            if not is_open(s):
                closed_at = time.monotonic() - t0
                break
            time.sleep(0.2)
        assert closed_at is not None, "a dribbling connection outlived its header deadline"
        assert closed_at >= timeout * 0.9, f"closed after {closed_at:.2f} s, before the deadline"
        assert wait_closed(silent) == b""
        assert refused(d, "header_timeout") >= 2
        print(f"# a dribbling connection closed {closed_at:.2f} s after its first bytes "
              f"(deadline {timeout} s)")
        # a request whose headers arrive in time is served on the same terms
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


@test
def a_full_gate_drops_its_oldest_connection():
    d = Daemon(env={"RUNTARA_HTTP_MAX_PENDING_CONNECTIONS": "16",
                    "RUNTARA_HTTP_HEADER_TIMEOUT_SECS": "3600"}).start()
    held = []
    try:
        # Accepted in the order they connect; no request meanwhile, it would take a place too.
        held = [connect_from(d, "127.0.0.1") for _ in range(16)]
        newest = connect_from(d, "127.0.0.1")
        assert wait_closed(held[0]) == b""
        assert all(is_open(s) for s in held[1:]) and is_open(newest)
        assert refused(d, "gate_full") >= 1  # and this request dropped the next oldest
        held.append(newest)
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        for s in held:
            s.close()
        d.cleanup()


@test
def half_open_connections_to_the_instance_socket_hold_no_slot():
    """The instance API has the management API's gate: connections that never finish a request
    wait there, so more of them than the server's limit leave its requests answered."""
    d = Daemon(env={"RUNTARA_HTTP_MAX_CONNECTIONS": "4",
                    "RUNTARA_HTTP_HEADER_TIMEOUT_SECS": "3600"}).start()
    sock = os.path.join(d.data_dir, "core.sock")
    held = []
    try:
        for i in range(8):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(60)
            s.connect(sock)
            s.sendall((b"", b"GET /api/v1/inst", b"GET /api/v1/health HTTP/1.1\r\n")[i % 3])
            held.append(s)
        wait_waiting(d, 8)
        # a whole request is served meanwhile (401: it carries no instance token)
        status, _, body = raw_exchange(sock, b"GET /api/v1/instances/x/input HTTP/1.1\r\n"
                                             b"Host: x\r\n\r\n")
        assert status == 401, (status, body)
        assert all(is_open(s) for s in held)
        for s in held:
            s.close()
        held = []
        wait_waiting(d, 0)
    finally:
        for s in held:
            s.close()
        d.cleanup()


@test
def the_reserve_keeps_health_and_metrics_answering_at_the_connection_limit():
    d = Daemon(env={"RUNTARA_HTTP_MAX_CONNECTIONS": "4", "RUNTARA_HTTP_RESERVED_CONNECTIONS": "2",
                    "RUNTARA_HTTP_IDLE_TIMEOUT_SECS": "3600"}).start()
    held = []
    try:
        # four kept-alive connections fill the normal limit; the connections of the start-up's
        # health checks count until the server sees them gone, so a first try may be refused
        for _ in range(4):
            deadline = deadline_in(30)
            while True:
                s = connect_from(d, "127.0.0.1",
                                 b"GET /api/v1/instances HTTP/1.1\r\nHost: x\r\n\r\n")
                status, headers, _ = parse_reply(wait_closed_or_reply(s))
                if status != 503 or time.monotonic() > deadline:
                    break
                s.close()
                time.sleep(0.02)
            assert status == 200 and headers.get("connection") != "close", (status, headers)
            held.append(s)
        status, headers, body = raw_exchange_from(
            d, "127.0.0.1", b"GET /api/v1/instances HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 503, (status, body)
        assert error_of(Reply(body))["code"] == "unavailable"
        assert refused(d, "server_full") >= 1
        for path in (b"/api/v1/health", b"/metrics", b"/api/v1/health?x=1"):
            # each reserved connection closes after its reply, and the server counts it off when
            # it sees it gone: on a slow machine (TSan) the next may find both still counted
            deadline = deadline_in(30)
            while True:
                status, headers, _ = raw_exchange_from(
                    d, "127.0.0.1", b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
                if status != 503 or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            assert status == 200, (path, status)
            assert headers.get("connection") == "close", (path, headers)  # the reserve empties
        assert all(is_open(s) for s in held)
        held.pop().close()
        deadline = time.monotonic() + 60
        while True:  # the server counts the closed connection off when it sees it gone
            status, _, _ = raw_exchange_from(
                d, "127.0.0.1", b"GET /api/v1/instances HTTP/1.1\r\nHost: x\r\n\r\n")
            if status == 200:
                break
            assert time.monotonic() < deadline, status
            time.sleep(0.02)
    finally:
        for s in held:
            s.close()
        d.cleanup()


if __name__ == "__main__":
    main()
