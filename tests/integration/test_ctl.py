#!/usr/bin/env python3
"""runtara-ctl against the real daemon: health, the image registry (register, list, get, delete,
pagination), error reporting and exit statuses, the API keys file (create, list, revoke) and a
daemon that authenticates with the keys it wrote, the upload progress bar (tty only), and the
instances commands (start, wait, get, list, events, checkpoints, logs, stop, resume, signals) with
shell workflows run by the native runner."""
import hashlib
import json
import os
import pty
import re
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import CTL, Daemon, main, run_ctl, test, deadline_in  # noqa: E402


def fields(text):
    """The "key: value" lines of a single-object output, as a dict."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(":")
        assert sep, f"not a key: value line: {line!r}"
        out[k.strip()] = v.strip()
    return out


def table(text):
    """A table printed by runtara-ctl: (headings, rows), cells split on runs of 3+ spaces."""
    lines = text.rstrip("\n").splitlines()
    split = lambda line: [c.strip() for c in line.split("   ") if c.strip()]  # noqa: E731
    return split(lines[0]), [split(line) for line in lines[1:]]


def ok(p):
    assert p.returncode == 0, f"exit {p.returncode}\nstdout: {p.stdout}\nstderr: {p.stderr}"
    return p


def write_file(d, name, data):
    path = os.path.join(d.tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


@test
def health_human_and_json():
    d = Daemon().start()
    try:
        p = ok(run_ctl(d, "health"))
        f = fields(p.stdout)
        assert f["status"] == "ok" and f["version"] == "0.1.0", f
        assert f["store"].startswith("sqlite, ok, schema version "), f
        with open(os.path.join(d.data_dir, "daemon-id")) as idf:
            assert f["daemon"] == idf.read().strip(), f
        assert f["server"] == f"http://127.0.0.1:{d.port}", f
        assert p.stderr == "", p.stderr

        doc = json.loads(ok(run_ctl(d, "--json", "health")).stdout)
        assert doc["status"] == "ok" and doc["store"]["backend"] == "sqlite", doc
        assert isinstance(doc["uptime_ms"], int)
        # the common options may follow the command too
        assert json.loads(ok(run_ctl(d, "health", "--json")).stdout)["version"] == "0.1.0"

        v = ok(run_ctl(None, "--version"))
        assert v.stdout == "runtara-ctl 0.1.0\n", v.stdout
        h = ok(run_ctl(None, "--help"))
        assert "images register" in h.stdout and "keys revoke" in h.stdout
    finally:
        d.cleanup()


@test
def register_list_get_delete():
    d = Daemon().start()
    try:
        data = b"\x7fELF" + os.urandom(300_000)
        path = write_file(d, "prog", data)
        p = ok(run_ctl(d, "images", "register", path, "--tenant", "acme", "--name", "hello",
                       "--description", "first one & only", "--runner", "native",
                       "--label", "team=core", "--label", "tier=a=b"))
        assert "\r" not in p.stderr and p.stderr == "", f"no progress bar off a tty: {p.stderr!r}"
        f = fields(p.stdout)
        assert f["sha256"] == hashlib.sha256(data).hexdigest(), f
        assert f["size_bytes"].split()[0] == str(len(data)), f
        assert f["tenant_id"] == "acme" and f["name"] == "hello" and f["version"] == "1", f
        assert f["description"] == "first one & only" and f["runner_type"] == "native", f
        assert f["labels"] == "team=core, tier=a=b", f
        image_id = f["image_id"]
        with open(os.path.join(d.data_dir, "images", image_id, "binary"), "rb") as g:
            assert g.read() == data

        served = d.request("GET", f"/api/v1/images/{image_id}").json()
        got = json.loads(ok(run_ctl(d, "images", "get", image_id, "--json")).stdout)
        assert got == served, (got, served)
        assert got["labels"] == {"team": "core", "tier": "a=b"}, got
        assert fields(ok(run_ctl(d, "images", "get", image_id)).stdout) == f

        heads, rows = table(ok(run_ctl(d, "images", "list")).stdout)
        assert heads == ["IMAGE ID", "TENANT", "NAME", "VERSION", "RUNNER", "SIZE", "CREATED"]
        assert len(rows) == 1 and rows[0][:5] == [image_id, "acme", "hello", "1", "native"], rows
        lst = json.loads(ok(run_ctl(d, "--json", "images", "list", "--tenant", "acme")).stdout)
        assert lst == {"images": [served], "next_cursor": None}, lst

        p = ok(run_ctl(d, "images", "delete", image_id))
        assert p.stdout == f'deleted image "{image_id}"\n', p.stdout
        p = run_ctl(d, "images", "get", image_id)
        assert p.returncode == 1 and p.stdout == ""
        assert p.stderr == f'runtara-ctl: image "{image_id}" does not exist (HTTP 404)\n', p.stderr
        p = ok(run_ctl(d, "images", "list"))
        assert p.stdout == "" and "no images" in p.stderr, p
    finally:
        d.cleanup()


@test
def list_all_follows_every_page():
    d = Daemon().start()
    try:
        ids = []
        for i in range(7):
            path = write_file(d, f"p{i}", os.urandom(100 + i))
            f = fields(ok(run_ctl(d, "images", "register", path, "--tenant", "acme",
                                  "--name", f"app{i}")).stdout)
            ids.append(f["image_id"])
        assert d.upload("other", "x", b"x").status == 201

        one = json.loads(ok(run_ctl(d, "images", "list", "--tenant", "acme", "--limit", "3",
                                    "--json")).stdout)
        assert len(one["images"]) == 3 and isinstance(one["next_cursor"], str), one
        every = json.loads(ok(run_ctl(d, "images", "list", "--tenant", "acme", "--limit", "3",
                                      "--all", "--json")).stdout)
        assert every["next_cursor"] is None
        assert [i["image_id"] for i in every["images"]] == ids[::-1], "newest first, no repeats"

        p = ok(run_ctl(d, "images", "list", "--tenant", "acme", "--limit", "3"))
        assert len(table(p.stdout)[1]) == 3 and "--all" in p.stderr, p
        p = ok(run_ctl(d, "images", "list", "--tenant", "acme", "--limit", "3", "--all"))
        assert sorted(r[0] for r in table(p.stdout)[1]) == sorted(ids) and p.stderr == "", p
        p = ok(run_ctl(d, "images", "list", "--name-prefix", "app", "--all"))
        assert len(table(p.stdout)[1]) == 7
        p = ok(run_ctl(d, "images", "list", "--name", "app3"))
        assert [r[0] for r in table(p.stdout)[1]] == [ids[3]]
    finally:
        d.cleanup()


@test
def server_errors_exit_1_with_the_servers_message():
    d = Daemon().start()
    try:
        p = run_ctl(d, "images", "delete", "no-such-image")
        assert p.returncode == 1 and p.stdout == "", p
        assert p.stderr == 'runtara-ctl: image "no-such-image" does not exist (HTTP 404)\n', p.stderr
        path = write_file(d, "prog", b"abc")
        p = run_ctl(d, "images", "register", path, "--name", "x")
        assert p.returncode == 1 and "tenant_id is required (HTTP 400)" in p.stderr, p
    finally:
        d.cleanup()


@test
def connection_refused_exits_1_with_a_hint():
    p = run_ctl(None, "health")
    assert p.returncode == 1 and p.stdout == "", p
    lines = p.stderr.splitlines()
    assert lines[0].startswith("runtara-ctl: could not connect to http://127.0.0.1:1: "), lines
    assert lines[1] == "hint: is runtara-environment running? Set RUNTARA_URL.", lines
    p = run_ctl(None, "--url", "http://127.0.0.1:1/", "images", "list")
    assert p.returncode == 1 and "could not connect to http://127.0.0.1:1:" in p.stderr, p


@test
def usage_errors_exit_2():
    with tempfile.TemporaryDirectory() as tmp:
        prog = os.path.join(tmp, "prog")
        with open(prog, "wb") as f:
            f.write(b"abc")
        cases = [
            (["frobnicate"], 'unknown command "frobnicate"'),
            ([], "missing command"),
            (["images"], "images: missing subcommand"),
            (["images", "push"], 'images: unknown subcommand "push"'),
            (["images", "register", prog, "--tenant", "acme"], "missing required option --name"),
            (["images", "register", "--tenant", "a", "--name", "b"], "missing the FILE"),
            (["images", "register", prog, "--name", "b", "--runner", "vm"], 'invalid runner "vm"'),
            (["images", "register", prog, "--name", "b", "--label", "nokey"], 'invalid label'),
            (["images", "list", "--bogus"], 'unknown option "--bogus"'),
            (["images", "list", "--limit", "0"], 'invalid limit "0"'),
            (["images", "list", "--limit"], 'option "--limit" requires a value'),
            (["images", "get"], "missing the IMAGE_ID"),
            (["images", "get", "../etc"], 'invalid image id "../etc"'),
            (["--url", "ftp://x", "health"], 'invalid server URL "ftp://x"'),
            (["keys", "create", "--admin"], "missing required option --file"),
            (["keys", "create", "--file", "k", "--admin", "--tenant", "a"], "exactly one of"),
            (["keys", "revoke", "--file", "k"], "missing the NAME"),
        ]
        for args, msg in cases:
            p = run_ctl(None, *args)
            assert p.returncode == 2, (args, p)
            assert msg in p.stderr and p.stderr.endswith("hint: see runtara-ctl --help\n"), (args,
                                                                                            p.stderr)
            assert "could not connect" not in p.stderr, "usage is checked before any request"

        # A bad file is refused before any request (the URL points nowhere).
        p = run_ctl(None, "images", "register", tmp, "--tenant", "a", "--name", "b")
        assert p.returncode == 1 and p.stderr == f'runtara-ctl: cannot register "{tmp}": it is ' \
            "a directory\n", p.stderr
        missing = os.path.join(tmp, "missing")
        p = run_ctl(None, "images", "register", missing, "--tenant", "a", "--name", "b")
        assert p.returncode == 1 and p.stderr.startswith(
            f'runtara-ctl: could not open image file "{missing}": '), p.stderr
        empty = os.path.join(tmp, "empty")
        open(empty, "wb").close()
        p = run_ctl(None, "images", "register", empty, "--tenant", "a", "--name", "b")
        assert p.returncode == 1 and "the file is empty" in p.stderr, p.stderr


def create_key(path, *args):
    p = ok(run_ctl(None, "keys", "create", "--file", path, *args))
    key = p.stdout.strip()
    assert key.startswith("rtk_") and len(key) == 52 and p.stdout == key + "\n", p.stdout
    assert "shown only this once" in p.stderr and "SIGHUP" in p.stderr, p.stderr
    assert key not in p.stderr
    return key


@test
def keys_create_list_revoke():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "keys")
        admin = create_key(path, "--admin", "--name", "ops")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        acme = create_key(path, "--tenant", "acme", "--name", "acme-ci")
        with open(path, "a") as f:
            f.write("# a comment the operator wrote\n")
        beta = create_key(path, "--tenant", "beta")
        with open(path) as f:
            text = f.read()
        for key in (admin, acme, beta):
            assert key not in text and hashlib.sha256(key.encode()).hexdigest() in text

        p = run_ctl(None, "keys", "create", "--file", path, "--tenant", "x", "--name", "ops")
        assert p.returncode == 1 and 'a key named "ops" already exists' in p.stderr, p
        assert p.stdout == ""

        heads, rows = table(ok(run_ctl(None, "keys", "list", "--file", path)).stdout)
        assert heads == ["NAME", "ROLE", "HASH-PREFIX"], heads
        beta_name = f"key-{hashlib.sha256(beta.encode()).hexdigest()[:8]}"
        assert [r[:2] for r in rows] == [["ops", "admin"], ["acme-ci", "tenant:acme"],
                                         [beta_name, "tenant:beta"]], rows
        assert rows[0][2] == hashlib.sha256(admin.encode()).hexdigest()[:12]
        doc = json.loads(ok(run_ctl(None, "keys", "list", "--file", path, "--json")).stdout)
        assert [k["name"] for k in doc["keys"]] == ["ops", "acme-ci", beta_name], doc

        p = ok(run_ctl(None, "keys", "revoke", "--file", path, "acme-ci"))
        assert p.stdout == 'revoked API key "acme-ci"\n', p.stdout
        with open(path) as f:
            after = f.read()
        assert after == "".join(line for line in text.splitlines(True) if "acme-ci" not in line)
        assert "# a comment the operator wrote\n" in after
        p = run_ctl(None, "keys", "revoke", "--file", path, "acme-ci")
        assert p.returncode == 1 and 'no key named "acme-ci"' in p.stderr, p
        p = run_ctl(None, "keys", "list", "--file", os.path.join(tmp, "nope"))
        assert p.returncode == 1 and "could not read keys file" in p.stderr, p


@test
def daemon_accepts_the_keys_ctl_wrote():
    tmp = tempfile.mkdtemp(prefix="runtara-ctl-keys-")
    path = os.path.join(tmp, "keys")
    admin = create_key(path, "--admin", "--name", "ops")
    acme = create_key(path, "--tenant", "acme", "--name", "acme-ci")
    d = Daemon(env={"RUNTARA_API_KEYS_FILE": path}).start()
    try:
        prog = write_file(d, "prog", os.urandom(2048))
        f = fields(ok(run_ctl(d, "images", "register", prog, "--tenant", "acme", "--name", "a",
                              key=acme)).stdout)
        assert f["tenant_id"] == "acme"
        # a tenant key may leave out --tenant; an admin key registers for anyone
        ok(run_ctl(d, "images", "register", prog, "--name", "b", key=acme))
        ok(run_ctl(d, "images", "register", prog, "--tenant", "zeta", "--name", "z", key=admin))

        p = run_ctl(d, "images", "list", key="rtk_" + "0" * 48)
        assert p.returncode == 1 and p.stderr == "runtara-ctl: invalid API key (HTTP 401)\n", p
        p = run_ctl(d, "images", "list")
        assert p.returncode == 1 and "missing API key" in p.stderr and "(HTTP 401)" in p.stderr
        p = run_ctl(d, "images", "register", prog, "--tenant", "zeta", "--name", "x", key=acme)
        assert p.returncode == 1 and "(HTTP 403)" in p.stderr, p

        rows = table(ok(run_ctl(d, "images", "list", key=acme)).stdout)[1]
        assert sorted((r[1], r[2]) for r in rows) == [("acme", "a"), ("acme", "b")], rows
        rows = table(ok(run_ctl(d, "images", "list", "--api-key", admin)).stdout)[1]
        assert len(rows) == 3, rows

        # revoke + SIGHUP: the key stops working; a key created now starts working
        ok(run_ctl(None, "keys", "revoke", "--file", path, "acme-ci"))
        fresh = create_key(path, "--tenant", "acme", "--name", "acme-2")
        d.proc.send_signal(signal.SIGHUP)
        deadline = deadline_in(10)
        while run_ctl(d, "images", "list", key=fresh).returncode != 0:
            assert time.monotonic() < deadline, "the daemon did not reload its keys"
            time.sleep(0.05)
        p = run_ctl(d, "images", "list", key=acme)
        assert p.returncode == 1 and "invalid API key" in p.stderr, p
    finally:
        d.cleanup()
        subprocess.run(["rm", "-rf", tmp], check=False)


@test
def progress_bar_only_on_a_terminal():
    d = Daemon().start()
    try:
        data = os.urandom(3 << 20)
        path = write_file(d, "prog", data)
        master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
        env["RUNTARA_URL"] = f"http://127.0.0.1:{d.port}"
        proc = subprocess.Popen([CTL, "images", "register", path, "--tenant", "a", "--name", "p"],
                                env=env, stdout=subprocess.PIPE, stderr=slave)
        os.close(slave)
        err = b""
        while True:
            r, _, _ = select.select([master], [], [], 30)
            try:
                chunk = os.read(master, 4096) if r else b""
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            if not chunk:
                break
            err += chunk
        out = proc.stdout.read().decode()
        proc.stdout.close()
        assert proc.wait(30) == 0, err
        os.close(master)
        assert fields(out)["sha256"] == hashlib.sha256(data).hexdigest()
        text = err.decode()
        assert "\r[" in text and "100%" in text and "3.0 MiB / 3.0 MiB" in text, repr(text)
        assert text.endswith("\n"), repr(text[-80:])

        p = ok(run_ctl(d, "images", "register", path, "--tenant", "a", "--name", "p"))
        assert p.stderr == "" and "\r" not in p.stderr
    finally:
        d.cleanup()



# ---- instances ------------------------------------------------------------------------------

# The instance API (docs/instance-api.md) spoken with curl over the unix socket.
PRELUDE = r"""#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&4)"  # its pipe (RUNTARA_INSTANCE_TOKEN_FD)
set -eu
sock=${RUNTARA_SERVER_ADDR#unix:}
api() { curl -sf --unix-socket "$sock" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID$@"; }
api /register -X POST >/dev/null
"""

# Reads its name from the input, saves a text and a binary checkpoint, reports progress, logs a
# line and completes with an output made from the input and the env.
GREETER = PRELUDE + r"""
name=$(api /input | sed -n 's/.*"name" *: *"\([^"]*\)".*/\1/p')
greeting=$(api /checkpoints/greet -X PUT -H 'Content-Type: application/octet-stream' \
           --data-binary "hello ${name:-world}")
head -c 300 /dev/urandom > blob
api /checkpoints/blob -X PUT -H 'Content-Type: application/octet-stream' --data-binary @blob \
    >/dev/null
api /events -X POST -H 'Content-Type: application/json' -d "{\"type\": \"progress\", \
\"subtype\": \"greeted\", \"payload\": {\"percent\": 50, \"name\": \"${name:-world}\"}}" >/dev/null
echo "greeted ${name:-world} in a ${STYLE:-plain} way" >&2
api /completed -X POST -H 'Content-Type: application/json' \
    -d "{\"output\": {\"greeting\": \"$greeting\", \"style\": \"${STYLE:-plain}\"}}" >/dev/null
"""

# Sleeps on its first launch (until stopped); completes on a later one.
SLEEPER = PRELUDE + r"""
touch "$OUT/up.$RUNTARA_ATTEMPT"
if [ "$RUNTARA_ATTEMPT" = 1 ]; then sleep 60; fi
api /completed -X POST -H 'Content-Type: application/json' \
    -d "{\"output\": {\"attempt\": $RUNTARA_ATTEMPT}}" >/dev/null
"""

# Loops, reading the pending control signal from the headers of a heartbeat; acknowledges a
# cancel and exits.
LOOPER = PRELUDE + r"""
signal_of() { curl -sf -D - -o /dev/null -X POST --unix-socket "$sock" \
        -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/heartbeat" |
        tr -d '\r' | sed -n 's/^Runtara-Signal: //ip'; }
i=0
while [ $i -lt 400 ]; do
    s=$(signal_of)
    if [ "$s" = cancel ]; then
        echo "$s" >> "$OUT/acked"
        api /signals/ack -X POST -H 'Content-Type: application/json' -d '{"type":"cancel"}'
        exit 0
    fi
    touch "$OUT/looping"
    i=$((i+1)); sleep 0.05
done
exit 5
"""

CRASHER = PRELUDE + 'echo "about to fail" >&2\nexit 3\n'

NOT_FOUND = 'runtara-ctl: instance "nope" does not exist (HTTP 404)\n'


def record(text):
    """The "key: value" lines of an instance, input and output (multi-line JSON) decoded."""
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith(" ") and key:
            out[key] += "\n" + line
            continue
        key, sep, v = line.partition(":")
        assert sep and " " not in key, f"not a key: value line: {line!r}"
        out[key] = v.strip()
    for k in ("input", "output"):
        out[k] = json.loads(out[k])
    return out


def register_script(d, name, script, tenant="acme"):
    path = write_file(d, name + ".sh", script.encode())
    f = fields(ok(run_ctl(d, "images", "register", path, "--tenant", tenant, "--name", name,
                          "--runner", "native")).stdout)
    return f["image_id"]


def ctl_json(d, *args):
    return json.loads(ok(run_ctl(d, *args, "--json")).stdout)


def exit_recorded(d, iid):
    """The server's instance once its exit code (which follows a reported end) is in."""
    for _ in range(500):
        inst = d.request("GET", f"/api/v1/instances/{iid}").json()
        if inst["exit_code"] is not None:
            return inst
        time.sleep(0.02)
    raise AssertionError(f"no exit code recorded: {inst}")


def wait_file(path, timeout=20):
    deadline = deadline_in(timeout)
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def scratch(d):
    out = os.path.join(d.tmp, "out")
    os.makedirs(out, exist_ok=True)
    return out


@test
def instances_start_wait_get():
    d = Daemon().start()
    try:
        img = register_script(d, "greeter", GREETER)
        p = ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "g1",
                       "--input", '{"name": "Ada"}', "--env", "STYLE=warm", "--wait"))
        assert p.stderr == "", p.stderr
        r = record(p.stdout)
        assert (r["instance_id"], r["tenant_id"], r["image_id"]) == ("g1", "acme", img), r
        assert (r["status"], r["reason"], r["attempt"]) == ("completed", "completed", "1"), r
        assert r["output"] == {"greeting": "hello Ada", "style": "warm"}, r
        assert r["input"] == {"name": "Ada"} and r["env"] == "STYLE=warm", r
        assert r["checkpoint"] == "blob" and r["error"] == "-" and r["timeout"] == "300 s", r
        # input and output are pretty-printed, aligned under the value column
        assert 'output:      {\n               "greeting": "hello Ada",\n' in p.stdout, p.stdout

        served = exit_recorded(d, "g1")
        assert ctl_json(d, "instances", "get", "g1") == served
        r = record(ok(run_ctl(d, "instances", "get", "g1")).stdout)
        assert r["exit_code"] == "0" and r["finished_at"] == served["finished_at"], r
        assert r["created_at"] == served["created_at"], r
        # the program never sent a heartbeat, but its checkpoint counts as one
        assert r["heartbeat"] == served["heartbeat_at"], (r, served)
        # get --wait on a settled instance answers at once
        assert record(ok(run_ctl(d, "instances", "get", "g1", "--wait", "30")).stdout) == r

        # by image name, input from stdin, then a separate wait
        p = ok(run_ctl(d, "instances", "start", "--image", "greeter", "--tenant", "acme",
                       "--input-file", "-", "--timeout", "60", input='{"name": "Bob"}'))
        r = record(p.stdout)
        iid = r["instance_id"]
        assert len(iid) == 36 and r["status"] in ("pending", "running"), r
        assert r["timeout"] == "60 s" and r["input"] == {"name": "Bob"}, r
        p = ok(run_ctl(d, "instances", "wait", iid))
        assert record(p.stdout)["output"] == {"greeting": "hello Bob", "style": "plain"}, p
        # a uuid after --wait is the id, never its value
        p = ok(run_ctl(d, "instances", "get", "--wait", iid))
        assert record(p.stdout)["instance_id"] == iid
        doc = json.loads(ok(run_ctl(d, "instances", "wait", iid, "--json")).stdout)
        assert doc["status"] == "completed" and doc["instance_id"] == iid, doc

        # an input file; starting the same instance again is idempotent (HTTP 200)
        path = write_file(d, "input.json", b'{"name": "Cy"}')
        args = ("instances", "start", "--image-id", img, "--id", "g3", "--input-file", path)
        first = ctl_json(d, *args, "--wait=20")
        assert first["output"]["greeting"] == "hello Cy", first
        again = ctl_json(d, *args)
        assert again["instance_id"] == "g3" and again["status"] == "completed", again
        p = run_ctl(d, "instances", "start", "--image-id", img, "--id", "g3", "--input", "{}")
        assert p.returncode == 1 and p.stdout == "", p
        assert p.stderr == "runtara-ctl: instance already exists with a different request " \
            "(HTTP 409)\ndetail: starting the same instance_id again is idempotent only with " \
            "the same image, input, env and timeout\n", p.stderr

        # the server's checks still apply, with its message
        p = run_ctl(d, "instances", "start", "--image-id", img, "--env", "RUNTARA_X=1")
        assert p.returncode == 1 and "env may not set RUNTARA_X" in p.stderr, p
        assert p.stderr.endswith("(HTTP 400)\n"), p.stderr
        p = run_ctl(d, "instances", "start", "--image", "nosuch", "--tenant", "acme")
        assert p.returncode == 1 and p.stderr == 'runtara-ctl: image "nosuch" does not exist ' \
            'for tenant "acme" (HTTP 404)\n', p.stderr
    finally:
        d.cleanup()


@test
def instances_list_filters_and_pages():
    d = Daemon().start()
    try:
        img = register_script(d, "greeter", GREETER)
        other = register_script(d, "crasher", CRASHER, tenant="beta")
        ids = [f"l{i}" for i in range(5)]
        for i in ids:
            ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", i, "--wait"))
        assert run_ctl(d, "instances", "start", "--image-id", other, "--id", "x1",
                       "--wait").returncode == 1

        p = ok(run_ctl(d, "instances", "list"))
        heads, rows = table(p.stdout)
        assert heads == ["INSTANCE ID", "TENANT", "STATUS", "REASON", "ATTEMPT", "CREATED",
                         "FINISHED"], heads
        assert [r[0] for r in rows] == ["x1"] + ids[::-1], "newest first"
        assert rows[0][1:5] == ["beta", "failed", "crashed", "1"], rows
        assert rows[1][1:5] == ["acme", "completed", "completed", "1"], rows
        assert rows[1][5].endswith("Z") and rows[1][6].endswith("Z"), rows
        assert p.stderr == "total: 6 instances\n", p.stderr

        p = ok(run_ctl(d, "instances", "list", "--status", "failed"))
        assert [r[0] for r in table(p.stdout)[1]] == ["x1"] and p.stderr == "total: 1 instance\n"
        p = ok(run_ctl(d, "instances", "list", "--tenant", "acme", "--status", "completed",
                       "--image-id", img))
        assert sorted(r[0] for r in table(p.stdout)[1]) == ids
        p = ok(run_ctl(d, "instances", "list", "--image-id", "no-such-image"))
        assert p.stdout == "" and p.stderr == "no instances found\n", p
        p = ok(run_ctl(d, "instances", "list", "--created-after", "2999-01-01T00:00:00Z"))
        assert p.stdout == "" and "no instances" in p.stderr, p
        p = ok(run_ctl(d, "instances", "list", "--created-before", "2999-01-01T00:00:00Z",
                       "--finished-after", "2000-01-01T00:00:00Z"))
        assert len(table(p.stdout)[1]) == 6

        p = ok(run_ctl(d, "instances", "list", "--tenant", "acme", "--limit", "2"))
        assert [r[0] for r in table(p.stdout)[1]] == ["l4", "l3"], p.stdout
        assert p.stderr == "note: 2 of 5 instances shown; use --all to list them all\n", p.stderr
        p = ok(run_ctl(d, "instances", "list", "--tenant", "acme", "--limit", "2", "--all"))
        assert [r[0] for r in table(p.stdout)[1]] == ids[::-1], p.stdout
        assert p.stderr == "total: 5 instances\n", p.stderr

        one = ctl_json(d, "instances", "list", "--limit", "2")
        assert len(one["instances"]) == 2 and isinstance(one["next_cursor"], str), one
        assert one["total"] == 6, one
        every = ctl_json(d, "instances", "list", "--limit", "2", "--all")
        served = d.request("GET", "/api/v1/instances").json()
        assert every == {"instances": served["instances"], "next_cursor": None, "total": 6}
    finally:
        d.cleanup()


@test
def instances_events_checkpoints_logs():
    d = Daemon().start()
    try:
        img = register_script(d, "greeter", GREETER)
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "g1", "--input",
                   '{"name": "Ada"}', "--env", "STYLE=warm", "--wait"))
        exit_recorded(d, "g1")

        heads, rows = table(ok(run_ctl(d, "instances", "events", "g1")).stdout)
        assert heads == ["ID", "TIME", "TYPE", "SUBTYPE", "PAYLOAD"], heads
        types = [r[2] for r in rows]
        for t in ("started", "registered", "checkpoint", "progress", "completed", "exited"):
            assert t in types, types
        assert types.index("started") < types.index("progress") < types.index("completed")
        progress = rows[types.index("progress")]
        assert progress[3:] == ["greeted", '{"percent":50,"name":"Ada"}'], progress
        assert [int(r[0]) for r in rows] == sorted(int(r[0]) for r in rows), "oldest first"
        exited = rows[types.index("exited")]
        assert len(exited[4]) == 60 and exited[4].endswith("..."), "long payloads are cut"

        served = d.request("GET", "/api/v1/instances/g1/events").json()
        assert ctl_json(d, "instances", "events", "g1") == served
        doc = ctl_json(d, "instances", "events", "g1", "--type", "progress")
        assert [(e["type"], e["subtype"], e["payload"]) for e in doc["events"]] == \
            [("progress", "greeted", {"percent": 50, "name": "Ada"})], doc
        p = ok(run_ctl(d, "instances", "events", "g1", "--type", "checkpoint", "--subtype", "blob"))
        assert [r[3] for r in table(p.stdout)[1]] == ["blob"], p.stdout
        p = ok(run_ctl(d, "instances", "events", "g1", "--limit", "2"))
        assert len(table(p.stdout)[1]) == 2 and "use --all" in p.stderr, p
        p = ok(run_ctl(d, "instances", "events", "g1", "--limit", "2", "--all"))
        assert table(p.stdout)[1] == rows and p.stderr == "", p
        p = ok(run_ctl(d, "instances", "events", "g1", "--type", "custom"))
        assert p.stdout == "" and p.stderr == 'no events found for instance "g1"\n', p

        heads, rows = table(ok(run_ctl(d, "instances", "checkpoints", "g1")).stdout)
        assert heads == ["KEY", "SIZE", "CREATED"], heads
        assert [r[:2] for r in rows] == [["greet", "9 B"], ["blob", "300 B"]], rows
        doc = ctl_json(d, "instances", "checkpoints", "g1", "--limit", "1", "--all")
        assert [(c["key"], c["size_bytes"]) for c in doc["checkpoints"]] == \
            [("greet", 9), ("blob", 300)] and doc["next_cursor"] is None, doc

        p = ok(run_ctl(d, "instances", "checkpoint", "g1", "greet"))
        assert p.stdout == "hello Ada" and p.stderr == "", p
        blob = d.request("GET", "/api/v1/instances/g1/checkpoints/blob").body
        assert len(blob) == 300
        path = os.path.join(d.tmp, "blob.bin")
        p = ok(run_ctl(d, "instances", "checkpoint", "g1", "blob", "-o", path))
        assert p.stdout == f'wrote checkpoint "blob" (300 B) to "{path}"\n', p.stdout
        with open(path, "rb") as f:
            assert f.read() == blob
        raw = subprocess.run([CTL, "instances", "checkpoint", "g1", "blob"], capture_output=True,
                             env={**os.environ, "RUNTARA_URL": f"http://127.0.0.1:{d.port}"})
        assert raw.returncode == 0 and raw.stdout == blob, "raw bytes on stdout"
        doc = ctl_json(d, "instances", "checkpoint", "g1", "blob", "--output", path)
        assert doc == {"instance_id": "g1", "key": "blob", "size_bytes": 300, "file": path}, doc
        p = run_ctl(d, "instances", "checkpoint", "g1", "nokey")
        assert p.returncode == 1 and p.stderr == 'runtara-ctl: checkpoint "nokey" of instance ' \
            '"acme/g1" does not exist (HTTP 404)\n', p.stderr
        # a failed download leaves -o FILE as it was, and no temporary file behind
        p = run_ctl(d, "instances", "checkpoint", "g1", "nokey", "-o", path)
        assert p.returncode == 1 and "(HTTP 404)" in p.stderr and p.stdout == "", p
        with open(path, "rb") as f:
            assert f.read() == blob
        assert sorted(os.listdir(d.tmp)) == sorted(["blob.bin", "data", "daemon.log",
                                                   "greeter.sh"]), os.listdir(d.tmp)
        p = run_ctl(d, "instances", "checkpoint", "g1", "greet", "-o", d.tmp)
        assert p.returncode == 1 and p.stderr == f'runtara-ctl: cannot write to "{d.tmp}": it ' \
            'is a directory\n', p.stderr
        ok(run_ctl(d, "instances", "checkpoint", "g1", "greet", "-o", "/dev/null"))

        p = ok(run_ctl(d, "instances", "logs", "g1"))
        assert "greeted Ada in a warm way\n" in p.stdout and p.stderr == "", p
        p = ok(run_ctl(d, "instances", "logs", "g1", "--tail", "9"))
        assert p.stdout == "warm way\n", repr(p.stdout)
    finally:
        d.cleanup()


@test
def instances_checkpoint_download_is_streamed():
    """A checkpoint larger than the 64 MiB runtara-ctl keeps of a JSON answer arrives whole."""
    d = Daemon(env={"RUNTARA_MAX_CHECKPOINT_SIZE": "80M"}).start()
    try:
        img = register_script(d, "big", PRELUDE + r"""
head -c 70000000 /dev/urandom > big
api /checkpoints/big -X PUT -H 'Content-Type: application/octet-stream' --data-binary @big \
    >/dev/null
sha256sum big | cut -d' ' -f1 > "$OUT/big.sha256"
""")
        out = scratch(d)
        # 70 MB through curl, the daemon and SQLite take seconds under TSan; more on a loaded host
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "b1", "--env",
                   f"OUT={out}", "--wait", timeout=300))
        path = os.path.join(d.tmp, "big.bin")
        p = ok(run_ctl(d, "instances", "checkpoint", "b1", "big", "-o", path, timeout=300))
        assert p.stdout == f'wrote checkpoint "big" (66.8 MiB) to "{path}"\n', p.stdout
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        with open(os.path.join(out, "big.sha256")) as f:
            assert h.hexdigest() == f.read().strip()
        assert os.path.getsize(path) == 70000000
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~current_umask()
    finally:
        d.cleanup()


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


@test
def instances_stop_and_resume():
    d = Daemon().start()
    try:
        img = register_script(d, "sleeper", SLEEPER)
        out = scratch(d)
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "s1", "--env",
                   f"OUT={out}"))
        wait_file(os.path.join(out, "up.1"))

        t0 = time.time()
        p = run_ctl(d, "instances", "wait", "s1", "--timeout", "1")
        assert p.returncode == 1 and 0.9 < time.time() - t0 < 10, p
        assert record(p.stdout)["status"] == "running", p.stdout
        assert p.stderr == 'runtara-ctl: instance "s1" is still running after 1 s\n', p.stderr

        p = ok(run_ctl(d, "instances", "stop", "s1", "--grace", "1"))
        # 202: the stop is carried out after the answer, which rarely sees it done already
        assert re.fullmatch(r'stop requested for instance "s1" \(status: (running|cancelled)\)\n',
                            p.stdout), p.stdout
        p = run_ctl(d, "instances", "wait", "s1")
        assert p.returncode == 1, p
        r = record(p.stdout)
        assert (r["status"], r["reason"]) == ("cancelled", "stopped"), r
        assert p.stderr == 'runtara-ctl: instance "s1" did not complete: it is cancelled ' \
            '(stopped)\n', p.stderr
        p = run_ctl(d, "instances", "stop", "s1")
        assert p.returncode == 1 and p.stdout == "", p
        assert p.stderr == 'runtara-ctl: cannot stop instance "s1": it is cancelled (HTTP 409)\n'

        doc = ctl_json(d, "instances", "resume", "s1")
        assert doc["instance_id"] == "s1" and doc["status"] in ("pending", "running"), doc
        p = ok(run_ctl(d, "instances", "wait", "s1"))
        r = record(p.stdout)
        assert (r["status"], r["attempt"], r["output"]) == ("completed", "2", {"attempt": 2}), r
        assert os.path.exists(os.path.join(out, "up.2"))
        p = run_ctl(d, "instances", "resume", "s1")
        assert p.returncode == 1
        assert p.stderr == 'runtara-ctl: cannot resume instance "s1": it is completed (HTTP 409)\n'

        # stopped without --grace (the daemon's default grace)
        out2 = os.path.join(out, "s2")
        os.makedirs(out2)
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "s2", "--env",
                   f"OUT={out2}"))
        wait_file(os.path.join(out2, "up.1"))
        p = ok(run_ctl(d, "instances", "stop", "s2"))
        assert re.fullmatch(r'stop requested for instance "s2" \(status: (running|cancelled)\)\n',
                            p.stdout), p.stdout
        assert run_ctl(d, "instances", "wait", "s2").returncode == 1
        r = record(ok(run_ctl(d, "instances", "get", "s2")).stdout)
        assert (r["status"], r["reason"]) == ("cancelled", "stopped"), r
    finally:
        d.cleanup()


@test
def instances_signal_cancel_and_custom_signal():
    d = Daemon().start()
    try:
        img = register_script(d, "looper", LOOPER)
        out = scratch(d)
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "c1", "--env",
                   f"OUT={out}"))
        wait_file(os.path.join(out, "looping"))

        p = ok(run_ctl(d, "instances", "send", "c1", "approval", "--payload", '{"ok": true}'))
        assert p.stdout == 'sent signal "approval" to instance "c1" (status: running)\n', p.stdout
        p = ok(run_ctl(d, "instances", "signal", "c1", "cancel", "--payload", '"enough"'))
        assert re.fullmatch(r'sent cancel to instance "c1" \(status: (running|cancelled)\)\n',
                            p.stdout), p.stdout
        p = run_ctl(d, "instances", "wait", "c1", "--timeout", "20")
        assert p.returncode == 1, p
        r = record(p.stdout)
        assert (r["status"], r["reason"]) == ("cancelled", "cancelled"), r
        with open(os.path.join(out, "acked")) as f:
            assert f.read() == "cancel\n", "the program saw the cancel and acknowledged it"
        p = run_ctl(d, "instances", "signal", "c1", "pause")
        assert p.returncode == 1
        assert p.stderr == 'runtara-ctl: cannot pause instance "c1": it is cancelled (HTTP 409)\n'
        p = run_ctl(d, "instances", "send", "c1", "approval")
        assert p.returncode == 1 and "(HTTP 409)" in p.stderr, p
    finally:
        d.cleanup()


@test
def instances_wait_on_a_failure_exits_1():
    d = Daemon().start()
    try:
        img = register_script(d, "crasher", CRASHER)
        p = run_ctl(d, "instances", "start", "--image-id", img, "--id", "f1", "--wait", "30")
        assert p.returncode == 1, p
        r = record(p.stdout)
        assert (r["status"], r["reason"]) == ("failed", "crashed") and "status 3" in r["error"]
        assert p.stderr == 'runtara-ctl: instance "f1" did not complete: it is failed (crashed)\n'

        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "f2"))
        p = run_ctl(d, "instances", "wait", "f2", "--json")
        assert p.returncode == 1 and json.loads(p.stdout)["status"] == "failed", p
        assert exit_recorded(d, "f2")["exit_code"] == 3
        p = ok(run_ctl(d, "instances", "logs", "f2"))
        assert p.stdout == "about to fail\n", repr(p.stdout)
        # get --wait only reports: exit 0 whatever the status
        assert record(ok(run_ctl(d, "instances", "get", "f2", "--wait")).stdout)["exit_code"] == "3"
    finally:
        d.cleanup()


@test
def instances_unknown_instance_is_404():
    d = Daemon().start()
    try:
        for args in (["get", "nope"], ["get", "nope", "--wait", "5"],
                     ["get", "--wait", "5", "nope"], ["wait", "nope"],
                     ["stop", "nope"], ["resume", "nope"], ["signal", "nope", "cancel"],
                     ["send", "nope", "k"], ["events", "nope"], ["checkpoints", "nope"],
                     ["checkpoint", "nope", "k"], ["logs", "nope"]):
            p = run_ctl(d, "instances", *args)
            assert p.returncode == 1 and p.stdout == "" and p.stderr == NOT_FOUND, (args, p)
        p = run_ctl(d, "instances", "start", "--image-id", "no-such-image")
        assert p.returncode == 1 and "(HTTP 404)" in p.stderr, p
        p = ok(run_ctl(d, "instances", "list"))
        assert p.stdout == "" and p.stderr == "no instances found\n", p
    finally:
        d.cleanup()


@test
def instances_usage_errors_exit_2():
    with tempfile.TemporaryDirectory() as tmp:
        bad = os.path.join(tmp, "bad.json")
        with open(bad, "w") as f:
            f.write('{"a": 1,\n "a": 2}')
        cases = [
            (["instances"], "instances: missing subcommand"),
            (["instances", "frob"], 'instances: unknown subcommand "frob"'),
            (["instances", "start", "--image-id", "i", "--input", '{"a": [1, 2}'],
             "instances start: --input is not valid JSON: "),
            (["instances", "start", "--image-id", "i", "--input", "{} x"], "(line 1, column 4)"),
            (["instances", "start", "--image-id", "i", "--input-file", bad],
             f'input file "{bad}" is not valid JSON: duplicate object key near \'"a"\' (line 2'),
            (["instances", "start"], "give exactly one of --image-id and --image"),
            (["instances", "start", "--image-id", "i", "--image", "n"], "exactly one of"),
            (["instances", "start", "--image-id", "i", "--input", "{}", "--input-file", bad],
             "give --input or --input-file, not both"),
            (["instances", "start", "--image-id", "../x"], 'invalid image id "../x"'),
            (["instances", "start", "--image-id", "i", "--id", "a/b"], 'invalid instance id "a/b"'),
            (["instances", "start", "--image-id", "i", "--env", "NOVALUE"], 'invalid --env'),
            (["instances", "start", "--image-id", "i", "--env", "=v"], 'invalid --env "=v"'),
            (["instances", "start", "--image-id", "i", "--timeout", "0"], 'invalid --timeout "0"'),
            (["instances", "start", "--image-id", "i", "--wait=soon"], 'invalid --wait "soon"'),
            (["instances", "start", "--image-id", "i", "extra"], 'unexpected argument "extra"'),
            (["instances", "list", "--status", "done"], 'invalid status "done"'),
            (["instances", "list", "--limit", "0"], 'invalid limit "0"'),
            (["instances", "list", "--created-after", "yesterday"],
             'invalid --created-after "yesterday": expected RFC 3339'),
            (["instances", "get"], "instances get: missing the INSTANCE_ID"),
            (["instances", "get", "a", "b"], 'unexpected argument "b"'),
            (["instances", "get", "../etc"], 'invalid tenant ".." in "../etc"'),
            (["instances", "get", "a/b/c"], 'invalid instance id "b/c"'),
            (["instances", "wait", "a", "--timeout", "-1"], 'invalid --timeout "-1"'),
            (["instances", "stop", "a", "--grace", "9999"], 'invalid --grace "9999"'),
            (["instances", "resume"], "missing the INSTANCE_ID"),
            (["instances", "signal", "a"], "missing the signal type"),
            (["instances", "signal", "a", "stop"], 'unknown signal type "stop"'),
            (["instances", "signal", "a", "cancel", "--payload", "{oops"], "--payload is not"),
            (["instances", "send", "a"], "missing the WAIT_KEY"),
            (["instances", "send", "a", "k" * 129], "invalid WAIT_KEY"),
            (["instances", "events"], "missing the INSTANCE_ID"),
            (["instances", "events", "a", "--limit", "5000"], 'invalid limit "5000"'),
            (["instances", "checkpoints", "a", "--bogus"], 'unknown option "--bogus"'),
            (["instances", "checkpoint", "a"], "missing the KEY"),
            (["instances", "checkpoint", "a", "no/slash"], 'invalid checkpoint key "no/slash"'),
            (["instances", "logs", "a", "--tail", "0"], 'invalid --tail "0"'),
        ]
        for args, msg in cases:
            p = run_ctl(None, *args)
            assert p.returncode == 2, (args, p)
            assert msg in p.stderr, (args, p.stderr)
            assert p.stderr.endswith("hint: see runtara-ctl --help\n"), (args, p.stderr)
            assert "could not connect" not in p.stderr, "usage is checked before any request"
            assert p.stdout == "", (args, p.stdout)

        # a missing input file is a local failure (exit 1), also before any request
        p = run_ctl(None, "instances", "start", "--image-id", "i", "--input-file",
                    os.path.join(tmp, "missing"))
        assert p.returncode == 1 and "could not open input file" in p.stderr, p
        assert "could not connect" not in p.stderr
        h = ok(run_ctl(None, "instances", "--help"))
        assert "instances checkpoint INSTANCE KEY [-o FILE]" in h.stdout, h.stdout
        assert "instances start" in ok(run_ctl(None, "--help")).stdout


@test
def backup_while_running_and_restore():
    """runtara-ctl backup takes a consistent copy of the store while the daemon runs (admin
    only; the database itself is closed to other processes meanwhile), and a daemon started on
    that copy plus the images directory has every image and instance as they were."""
    d = Daemon(env={"RUNTARA_RUNNER": "mock"})
    keys = os.path.join(d.tmp, "keys")
    admin = create_key(keys, "--admin", "--name", "ops")
    tenant = create_key(keys, "--tenant", "acme", "--name", "ci")
    d.env["RUNTARA_API_KEYS_FILE"] = keys
    d.start()
    other = None
    try:
        img = fields(ok(run_ctl(d, "images", "register", write_file(d, "p.sh", b"#!/bin/sh\n"),
                                "--tenant", "acme", "--name", "p", "--runner", "native",
                                key=admin)).stdout)["image_id"]
        for i in range(3):
            r = d.request("POST", "/api/v1/instances", key=admin, json_body={
                "image_id": img, "instance_id": f"b{i}", "input": {"n": i},
                "env": {"MOCK_OUTPUT": json.dumps({"twice": 2 * i})}})
            assert r.status == 201, r
        done = [d.request("GET", f"/api/v1/instances/b{i}?wait=10s", key=admin).json()
                for i in range(3)]
        assert [x["status"] for x in done] == ["completed"] * 3, done

        import sqlite3
        try:  # the daemon holds its database alone
            sqlite3.connect(os.path.join(d.data_dir, "runtara.db")).execute(
                "SELECT COUNT(*) FROM instances").fetchone()
            raise AssertionError("another process could read the live database")
        except sqlite3.OperationalError as e:
            assert "locked" in str(e), e

        out = os.path.join(d.tmp, "backup.db")
        p = run_ctl(d, "backup", out, key=tenant)
        assert p.returncode == 1 and "needs an admin key" in p.stderr, p
        assert not os.path.exists(out)
        p = ok(run_ctl(d, "backup", out, key=admin))
        assert f'to "{out}"' in p.stdout, p.stdout
        assert [n for n in os.listdir(d.data_dir) if n.startswith(".backup-")] == []
        d.wait_log("route=backup", "backup_bytes=")

        other = Daemon(env={"RUNTARA_RUNNER": "mock", "RUNTARA_API_KEYS_FILE": keys})
        os.makedirs(other.data_dir, exist_ok=True)
        os.replace(out, os.path.join(other.data_dir, "runtara.db"))
        subprocess.run(["cp", "-a", os.path.join(d.data_dir, "images"), other.data_dir],
                       check=True)
        with open(os.path.join(other.data_dir, ".backup-leftover.db"), "wb") as f:
            f.write(b"half a backup")
        other.start()
        assert "removed 1 leftovers of interrupted backups" in other.logs(), other.logs()
        assert not os.path.exists(os.path.join(other.data_dir, ".backup-leftover.db"))
        got = other.request("GET", f"/api/v1/images/{img}", key=admin)
        assert got.status == 200, got
        for i in range(3):
            x = other.request("GET", f"/api/v1/instances/b{i}", key=admin).json()
            assert x == done[i], (x, done[i])
    finally:
        d.cleanup()
        if other:
            other.cleanup()


@test
def tenants_metrics_as_a_table_and_as_json():
    """One row per hour: the instances that ended in it, how, and how long they took; the same
    document as the API with --json; a tenant key refused another tenant; bad options named."""
    d, keys = harness.keyed_daemon()
    try:
        ops = keys["ops"]
        r = d.upload("acme", "ok", b"#!/bin/sh\nexit 0\n", key=ops, extra="&runner_type=native")
        assert r.status == 201, r
        img = r.json()["image_id"]
        for iid in ("t1", "t2"):
            r = d.request("POST", "/api/v1/instances",
                          json_body={"image_id": img, "instance_id": iid}, key=ops)
            assert r.status == 201, r
        for iid in ("t1", "t2"):
            ok(run_ctl(d, "instances", "wait", iid, key=ops))
        t0 = time.strftime("%Y-%m-%dT%H:00:00Z", time.gmtime(time.time() - 3600))
        p = ok(run_ctl(d, "tenants", "metrics", "acme", "--start", t0, key=keys["acme"]))
        heads, rows = table(p.stdout)
        assert heads == ["TIME", "ENDED", "COMPLETED", "FAILED", "CANCELLED", "OK %", "AVG MS",
                         "MIN MS", "MAX MS", "AVG MEM", "MAX MEM"], heads
        assert len(rows) in (2, 3), p.stdout  # the hour before, this one (and the next, at :59)
        assert rows[0][:6] == [t0, "0", "0", "0", "0", "-"], rows[0]
        assert rows[0][6:] == ["-"] * 5, rows[0]
        assert sum(int(r[1]) for r in rows) == 2 and sum(int(r[2]) for r in rows) == 2, rows
        busy = [r for r in rows if r[1] != "0"]
        assert all(r[5] == "100.0" and float(r[6]) >= 0 for r in busy), busy

        doc = json.loads(ok(run_ctl(d, "tenants", "metrics", "acme", "--start", t0,
                                    "--granularity", "day", "--json", key=ops)).stdout)
        assert doc["granularity"] == "day" and doc["tenant_id"] == "acme", doc
        assert sum(b["success_count"] for b in doc["buckets"]) == 2, doc

        p = run_ctl(d, "tenants", "metrics", "beta", key=keys["acme"])
        assert p.returncode == 1 and "cannot act for another tenant" in p.stderr, p
        p = run_ctl(d, "tenants", "metrics", "acme", "--granularity", "week", key=ops)
        assert p.returncode == 2 and 'invalid --granularity "week"' in p.stderr, p
        p = run_ctl(d, "tenants", "metrics", "acme", "--start", "yesterday", key=ops)
        assert p.returncode == 2 and 'invalid --start "yesterday"' in p.stderr, p
        p = run_ctl(d, "tenants", "metrics", key=ops)
        assert p.returncode == 2 and "missing the TENANT" in p.stderr, p
    finally:
        d.cleanup()


# Saves one checkpoint, waits for $OUT/go, saves another and completes.
GATED = PRELUDE + r"""
api /checkpoints/one -X PUT -H 'Content-Type: application/octet-stream' --data-binary 1 >/dev/null
while [ ! -e "$OUT/go" ]; do sleep 0.02; done
api /checkpoints/two -X PUT -H 'Content-Type: application/octet-stream' --data-binary 2 >/dev/null
api /completed -X POST -H 'Content-Type: application/json' -d '{"output": 2}' >/dev/null
"""


def read_lines_until(proc, cond, timeout=20):
    """Lines of proc's stdout (a binary pipe, read unbuffered: select() sees only what no buffer
    took yet) read until cond(lines) holds or EOF; lines, a list kept on proc across calls."""
    lines = proc.lines if hasattr(proc, "lines") else []
    proc.lines, proc.rest = lines, getattr(proc, "rest", b"")
    deadline = deadline_in(timeout)
    while not cond(lines):
        left = deadline - time.monotonic()
        assert left > 0, f"timed out; lines so far: {lines}"
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if not ready:
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            return lines
        *done, proc.rest = (proc.rest + chunk).split(b"\n")
        lines += [x.decode() for x in done]
    return lines


@test
def instances_watch_follows_status_and_events_as_they_come():
    d = Daemon().start()
    try:
        out = os.path.join(d.tmp, "out")
        os.makedirs(out)
        img = register_script(d, "gated", GATED)
        ok(run_ctl(d, "instances", "start", "--image-id", img, "--id", "follow", "--env",
                   f"OUT={out}"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNTARA_")}
        watch = subprocess.Popen([CTL, "instances", "watch", "follow"], stdout=subprocess.PIPE,
                                 env=dict(env, RUNTARA_URL=d.url))
        try:
            # the first checkpoint shows while the instance still waits for its gate
            lines = read_lines_until(watch, lambda ls: any(" one" in x for x in ls))
            assert watch.poll() is None, lines
            assert lines[0].startswith("-- follow: "), lines
            assert any(x.split()[1:2] == ["started"] for x in lines), lines
            open(os.path.join(out, "go"), "w").close()
            lines = read_lines_until(watch, lambda ls: False)  # to the end
            assert watch.wait(timeout=30) == 0, lines
        finally:
            watch.kill()
            watch.wait()
        types = [x.split()[1] for x in lines if not x.startswith("--")]
        assert types[-3:] == ["checkpoint", "completed", "exited"], lines
        assert "-- follow: completed (completed), attempt 1" in lines, lines
        assert re.match(r"^\d\d:\d\d:\d\d\.\d\d\d  checkpoint +two$",
                        next(x for x in lines if x.endswith(" two"))), lines

        # --json: one document per line; a failure exits 1
        crash = register_script(d, "crash", CRASHER)
        assert run_ctl(d, "instances", "start", "--image-id", crash, "--id", "crash",
                       "--wait").returncode == 1
        p = run_ctl(d, "instances", "watch", "crash", "--json")
        assert p.returncode == 1, p
        docs = [json.loads(line) for line in p.stdout.splitlines()]
        assert all(set(doc) in ({"event"}, {"instance"}) for doc in docs), docs
        assert docs[0]["instance"]["status"] == "failed", docs
        # a crash: its exit recorded, then the failure it makes
        assert [doc["event"]["type"] for doc in docs[1:]][-2:] == ["exited", "failed"], docs
        p = run_ctl(d, "instances", "watch", "nope")
        assert p.returncode == 1 and p.stderr == NOT_FOUND, p
    finally:
        d.cleanup()


@test
def daemons_lists_this_daemon_for_an_admin_key():
    d, keys = harness.keyed_daemon()
    try:
        heads, rows = table(ok(run_ctl(d, "daemons", key=keys["ops"])).stdout)
        assert heads == ["DAEMON", "HOST", "PID", "STARTED", "LEASE UNTIL", "LIVE", "INSTANCES"]
        assert len(rows) == 1 and rows[0][0].endswith(" *"), rows  # the one that answered
        assert rows[0][2] == str(d.proc.pid) and rows[0][5:] == ["yes", "0"], rows
        doc = json.loads(ok(run_ctl(d, "daemons", "--json", key=keys["ops"])).stdout)
        assert doc["daemons"][0]["self"] is True and doc["daemons"][0]["live"] is True, doc
        p = run_ctl(d, "daemons", key=keys["acme"])
        assert p.returncode == 1 and "for an admin key only" in p.stderr, p
    finally:
        d.cleanup()


main()
