#!/usr/bin/env python3
"""The image registry and the management server against the real daemon: registration, versions,
listing, deletion, tenants and keys, bad input, interrupted uploads, start-up settings."""
import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import DAEMON, Daemon, error_of, main, test, deadline_in  # noqa: E402

PROG = b"\x7fELF" + os.urandom(5000)


def image_entries(d):
    """What is on disk under DATA_DIR/images (names), hidden temp files included."""
    p = os.path.join(d.data_dir, "images")
    return sorted(os.listdir(p)) if os.path.isdir(p) else []


def image_rows(d):
    """The images the store holds, through the API (the daemon holds its database alone)."""
    r = d.request("GET", "/api/v1/images?limit=1000")
    assert r.status == 200, r
    return [(i["image_id"], i["tenant_id"], i["name"], i["version"]) for i in r.json()["images"]]


def make_keys(d, **roles):
    """Write a keys file with one key per role ("admin" or "tenant:<id>"); returns name → key."""
    keys, lines = {}, ["# test keys"]
    for name, role in roles.items():
        key = "rtk_" + os.urandom(24).hex()
        keys[name] = key
        lines.append(f"{hashlib.sha256(key.encode()).hexdigest()} {role} {name}")
    path = os.path.join(d.tmp, "keys")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path, keys


@test
def register_get_list_delete():
    d = Daemon().start()
    try:
        r = d.upload("acme", "hello", PROG, extra="&description=first%20one&label=team=core"
                     "&label=tier=gold&runner_type=native")
        assert r.status == 201, r
        img = r.json()
        assert img["sha256"] == hashlib.sha256(PROG).hexdigest()
        assert img["size_bytes"] == len(PROG) and img["version"] == 1
        assert img["labels"] == {"team": "core", "tier": "gold"}
        assert img["description"] == "first one" and img["runner_type"] == "native"
        assert r.header("Location") == f"/api/v1/images/{img['image_id']}"
        assert r.header("X-Request-Id")
        path = os.path.join(d.data_dir, "images", img["image_id"], "binary")
        with open(path, "rb") as f:
            assert f.read() == PROG
        assert os.stat(path).st_mode & 0o777 == 0o755

        got = d.request("GET", f"/api/v1/images/{img['image_id']}")
        assert got.status == 200 and got.json() == img, got
        lst = d.request("GET", "/api/v1/images?tenant_id=acme").json()
        assert lst == {"images": [img], "next_cursor": None}, lst

        assert d.request("DELETE", f"/api/v1/images/{img['image_id']}").status == 204
        assert d.request("GET", f"/api/v1/images/{img['image_id']}").status == 404
        assert image_entries(d) == [] and image_rows(d) == []
        assert d.request("DELETE", f"/api/v1/images/{img['image_id']}").status == 404
    finally:
        d.cleanup()


@test
def reregistration_makes_a_new_version_and_keeps_the_old():
    d = Daemon().start()
    try:
        a = d.upload("acme", "wf", b"v1").json()
        b = d.upload("acme", "wf", b"v2").json()
        assert (a["version"], b["version"]) == (1, 2)
        assert a["image_id"] != b["image_id"]
        assert d.request("GET", f"/api/v1/images/{a['image_id']}").json()["sha256"] == \
            hashlib.sha256(b"v1").hexdigest()
        names = d.request("GET", "/api/v1/images?name=wf").json()["images"]
        assert [i["version"] for i in names] == [2, 1]
    finally:
        d.cleanup()


@test
def list_pages_with_a_stable_cursor():
    d = Daemon().start()
    try:
        ids = [d.upload("acme", f"img{i}", b"x%d" % i).json()["image_id"] for i in range(7)]
        d.upload("other", "noise", b"n")
        seen, cursor = [], None
        while True:
            q = "/api/v1/images?tenant_id=acme&limit=3" + (f"&cursor={cursor}" if cursor else "")
            page = d.request("GET", q).json()
            assert len(page["images"]) <= 3
            seen += [i["image_id"] for i in page["images"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == list(reversed(ids)), seen
        pre = d.request("GET", "/api/v1/images?name_prefix=img1").json()["images"]
        assert [i["name"] for i in pre] == ["img1"]
        for bad in ("limit=0", "limit=1001", "limit=x", "cursor=abc", "cursor=-1", "frobnicate=1"):
            r = d.request("GET", f"/api/v1/images?{bad}")
            assert r.status == 400, (bad, r)
            error_of(r)
    finally:
        d.cleanup()


@test
def bad_registrations_are_refused_and_leave_nothing():
    d = Daemon(env={"RUNTARA_MAX_IMAGE_SIZE": "64K"}).start()
    try:
        cases = [
            ("no name", d.upload("acme", "", PROG), 400, "name"),
            ("no tenant", d.upload(None, "x", PROG), 400, "tenant_id is required"),
            ("slash", d.upload("ac/me", "x", PROG), 400, "starting with a letter or digit"),
            ("dotdot", d.upload("..", "x", PROG), 400, "tenant_id"),
            ("nul", d.upload("acme", "a%00b", PROG), 400, "name"),
            ("long", d.upload("t" * 300, "x", PROG), 400, "tenant_id"),
            ("runner", d.upload("acme", "x", PROG, extra="&runner_type=wasm"), 400, "runner_type"),
            ("label", d.upload("acme", "x", PROG, extra="&label=novalue"), 400, "label"),
            ("unknown param", d.upload("acme", "x", PROG, extra="&colour=red"), 400, "colour"),
            ("empty", d.upload("acme", "x", b""), 400, "empty"),
            ("checksum", d.upload("acme", "x", PROG, extra="&sha256=" + "0" * 64), 400,
             "checksum mismatch"),
            ("content type", d.upload("acme", "x", PROG,
                                      headers={"Content-Type": "application/json"}), 415,
             "application/octet-stream"),
            ("too large", d.upload("acme", "x", b"y" * 70000), 413, "size limit"),
        ]
        for what, r, status, needle in cases:
            assert r.status == status, (what, r)
            err = error_of(r)
            assert needle in err["message"], (what, err)
        assert image_rows(d) == [] and image_entries(d) == [], (image_rows(d), image_entries(d))
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


def raw_upload(port, body_iter, declared=None, chunked=False, tenant="acme", name="raw"):
    """Send an upload by hand; yields control between pieces. Returns the socket."""
    s = socket.create_connection(("127.0.0.1", port))
    head = f"POST /api/v1/images?tenant_id={tenant}&name={name} HTTP/1.1\r\nHost: x\r\n" \
           "Content-Type: application/octet-stream\r\n"
    head += "Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {declared}\r\n"
    s.sendall((head + "\r\n").encode())
    for piece in body_iter:
        s.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
    return s


def read_response(s):
    s.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@test
def chunked_upload_over_the_limit_gets_413():
    d = Daemon(env={"RUNTARA_MAX_IMAGE_SIZE": "256K"}).start()
    try:
        s = raw_upload(d.port, [os.urandom(65536) for _ in range(8)], chunked=True)
        s.sendall(b"0\r\n\r\n")
        resp = read_response(s)
        s.close()
        assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
        assert image_rows(d) == [] and image_entries(d) == []
    finally:
        d.cleanup()


@test
def client_killed_mid_upload_leaves_nothing():
    d = Daemon().start()
    try:
        s = raw_upload(d.port, [os.urandom(1 << 20)], declared=10 << 20)
        time.sleep(0.2)
        s.close()
        deadline = deadline_in(10)
        while "aborted=true" not in d.logs() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "aborted=true" in d.logs()
        assert image_rows(d) == [] and image_entries(d) == [], image_entries(d)
        assert d.upload("acme", "after", PROG).status == 201
    finally:
        d.cleanup()


@test
def daemon_killed_mid_upload_leaves_no_half_image():
    d = Daemon().start()
    try:
        s = raw_upload(d.port, [os.urandom(2 << 20)], declared=50 << 20)
        time.sleep(0.3)
        d.kill9()
        s.close()
        d.start()
        lst = d.request("GET", "/api/v1/images").json()
        assert lst["images"] == [], lst
        assert image_entries(d) == [], image_entries(d)
        assert d.upload("acme", "raw", PROG).json()["version"] == 1
    finally:
        d.cleanup()


@test
def orphan_directory_from_a_crash_is_swept_at_start():
    d = Daemon().start()
    try:
        d.stop()
        # what a crash between linking the file and inserting the row leaves behind
        orphan = os.path.join(d.data_dir, "images", "0a7c3b0e-0000-4000-8000-000000000000")
        os.makedirs(orphan)
        with open(os.path.join(orphan, "binary"), "wb") as f:
            f.write(b"half")
        with open(os.path.join(d.data_dir, "images", ".tmp-deadbeef"), "wb") as f:
            f.write(b"tmp")
        d.start()
        assert image_entries(d) == [], image_entries(d)
        d.wait_log("removed 2 leftovers")
    finally:
        d.cleanup()


@test
def racing_registrations_of_one_name_get_distinct_versions():
    d = Daemon().start()
    try:
        results = [None] * 8

        def go(i):
            results[i] = d.upload("acme", "race", os.urandom(300000))

        threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r.status == 201 for r in results), results
        assert sorted(r.json()["version"] for r in results) == list(range(1, 9))
        assert len({r.json()["image_id"] for r in results}) == 8
        assert len(image_entries(d)) == 8
    finally:
        d.cleanup()


@test
def delete_is_refused_while_an_unfinished_instance_uses_the_image():
    d = Daemon().start()
    try:
        img = d.upload("acme", "busy", PROG).json()["image_id"]
        d.edit_store("INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                     "status, created_at) VALUES ('acme/i1', 'i1', 'acme', ?, 'suspended', 0)",
                     img)
        r = d.request("DELETE", f"/api/v1/images/{img}")
        assert r.status == 409, r
        assert "unfinished instance" in error_of(r)["message"]
        d.edit_store("UPDATE instances SET status = 'completed'")
        assert d.request("DELETE", f"/api/v1/images/{img}").status == 204
    finally:
        d.cleanup()


@test
def tenant_keys_see_only_their_tenant():
    d = Daemon()
    path, keys = make_keys(d, ops="admin", acme="tenant:acme", beta="tenant:beta")
    d.env["RUNTARA_API_KEYS_FILE"] = path
    d.start()
    try:
        r = d.request("GET", "/api/v1/images")
        assert r.status == 401 and r.header("WWW-Authenticate"), r
        assert "missing API key" in error_of(r)["message"]
        r = d.request("GET", "/api/v1/images", key="rtk_" + "0" * 48)
        assert r.status == 401 and error_of(r)["message"] == "invalid API key", r
        assert d.request("GET", "/api/v1/health").status == 200  # public

        mine = d.upload(None, "w", PROG, key=keys["acme"])  # tenant from the key
        assert mine.status == 201 and mine.json()["tenant_id"] == "acme", mine
        theirs = d.upload(None, "w", PROG, key=keys["beta"]).json()
        r = d.upload("acme", "w", PROG, key=keys["beta"])
        assert r.status == 403 and error_of(r)["code"] == "forbidden", r
        aid = mine.json()["image_id"]

        r = d.request("GET", f"/api/v1/images/{aid}", key=keys["beta"])
        assert r.status == 404 and error_of(r)["message"] == f'image "{aid}" does not exist', r
        assert d.request("DELETE", f"/api/v1/images/{aid}", key=keys["beta"]).status == 404
        lst = d.request("GET", "/api/v1/images", key=keys["beta"]).json()["images"]
        assert [i["image_id"] for i in lst] == [theirs["image_id"]]
        r = d.request("GET", "/api/v1/images?tenant_id=acme", key=keys["beta"])
        assert r.status == 403, r
        both = d.request("GET", "/api/v1/images", key=keys["ops"]).json()["images"]
        assert len(both) == 2
        assert d.request("GET", f"/api/v1/images/{aid}", key=keys["acme"]).status == 200
        r = d.upload(None, "w", PROG, key=keys["ops"])
        assert r.status == 400 and "tenant_id is required" in error_of(r)["message"]
    finally:
        d.cleanup()


@test
def sighup_reloads_keys_and_keeps_old_ones_on_a_bad_file():
    d = Daemon()
    path, keys = make_keys(d, acme="tenant:acme")
    d.env["RUNTARA_API_KEYS_FILE"] = path
    d.start()
    try:
        new = "rtk_" + os.urandom(24).hex()
        with open(path, "a") as f:
            f.write(f"{hashlib.sha256(new.encode()).hexdigest()} tenant:beta late\n")
        assert d.request("GET", "/api/v1/images", key=new).status == 401
        d.proc.send_signal(signal.SIGHUP)
        deadline = deadline_in(5)
        while d.request("GET", "/api/v1/images", key=new).status != 200:
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        with open(path, "a") as f:
            f.write("garbage line\n")
        d.proc.send_signal(signal.SIGHUP)
        deadline = deadline_in(5)
        while "keeping the previous ones" not in d.logs():
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.05)
        assert d.request("GET", "/api/v1/images", key=new).status == 200
    finally:
        d.cleanup()


@test
def http_basics_request_ids_keepalive_and_routing():
    d = Daemon().start()
    try:
        c = d.conn()
        r1 = d.request("GET", "/api/v1/health", conn=c)
        sock = c.sock
        r2 = d.request("GET", "/api/v1/images", conn=c)
        assert c.sock is sock, "keep-alive: the second request reused the connection"
        assert r1.header("X-Request-Id") != r2.header("X-Request-Id")
        d.wait_log(r1.header("X-Request-Id"))
        c.close()
        r = d.request("GET", "/api/v1/health", headers={"X-Request-Id": "trace-42"})
        assert r.header("X-Request-Id") == "trace-42"
        r = d.request("GET", "/api/v1/nothing")
        assert r.status == 404 and error_of(r)["code"] == "not_found"
        r = d.request("PUT", "/api/v1/images")
        assert r.status == 405 and error_of(r)["code"] == "method_not_allowed", r
        assert r.header("Allow") == "POST, GET", r.headers
        r = d.request("GET", "/api/v1/images", headers={"X-Big": "a" * 40000})
        assert r.status in (413, 431), r
        assert d.request("GET", "/api/v1/health").status == 200
        m = d.request("GET", "/metrics")
        assert m.status == 200 and m.header("Content-Type").startswith("text/plain")
        text = m.body.decode()
        assert 'runtara_http_requests_total{route="images.list",code="200"} 1' in text, text
        assert "runtara_images 0" in text and "process_resident_memory_bytes" in text
    finally:
        d.cleanup()


def run_daemon(env, *args):
    e = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
    e.update(env)
    return subprocess.run([DAEMON, *args], env=e, capture_output=True, text=True, timeout=30)


@test
def bad_settings_stop_startup_with_status_2():
    cases = [
        ({"RUNTARA_ENV_HTTP_PORT": "99999"}, "RUNTARA_ENV_HTTP_PORT", "between 1 and 65535"),
        ({"RUNTARA_DATABASE_URL": "mysql://x"}, "RUNTARA_DATABASE_URL", "expected sqlite:PATH"),
        ({"RUNTARA_MAX_IMAGE_SIZE": "lots"}, "RUNTARA_MAX_IMAGE_SIZE", "size"),
        ({"RUNTARA_RUNNER": "docker"}, "RUNTARA_RUNNER", "oci, native, mock"),
        ({"RUNTARA_ENV_BIND": "0.0.0.0", "DATA_DIR": "/tmp/x"}, "without API keys",
         "RUNTARA_API_KEYS_FILE"),
    ]
    for env, needle, accepts in cases:
        p = run_daemon(env)
        assert p.returncode == 2, (env, p.returncode, p.stderr)
        assert needle in p.stderr and accepts in p.stderr, (env, p.stderr)
    p = run_daemon({}, "--frobnicate")
    assert p.returncode == 2 and "--help" in p.stderr, p.stderr
    p = run_daemon({}, "--help")
    assert p.returncode == 0 and "RUNTARA_ENV_HTTP_PORT" in p.stdout
    p = run_daemon({"RUNTARA_ENV_HTTP_PORT": "9000"}, "--print-config")
    assert p.returncode == 0
    assert "RUNTARA_ENV_HTTP_PORT=9000  # from environment" in p.stdout, p.stdout
    assert "RUNTARA_ENV_BIND=127.0.0.1  # default" in p.stdout


@test
def keys_file_problems_and_newer_schema_stop_startup():
    d = Daemon(env={"RUNTARA_API_KEYS_FILE": "/nonexistent/keys"})
    d.start(wait=False)
    assert d.proc.wait(20) == 1
    assert 'could not read API keys file \\"/nonexistent/keys\\"' in d.logs(), d.logs()
    d.cleanup()

    d = Daemon().start()
    try:
        d.stop()
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        db.execute("INSERT INTO schema_migrations VALUES (99, 'future', 0)")
        db.commit()
        db.close()
        d.start(wait=False)
        assert d.proc.wait(20) == 1
        assert "newer than this binary supports" in d.logs(), d.logs()
    finally:
        d.cleanup()


@test
def sigterm_stops_cleanly():
    d = Daemon().start()
    try:
        assert d.stop(signal.SIGTERM) == 0
        assert "stopped" in d.logs()
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
