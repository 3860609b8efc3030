#!/usr/bin/env python3
"""runtara-ctl against the real daemon: health, the image registry (register, list, get, delete,
pagination), error reporting and exit statuses, the API keys file (create, list, revoke) and a
daemon that authenticates with the keys it wrote, and the upload progress bar (tty only)."""
import hashlib
import json
import os
import pty
import select
import signal
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import CTL, Daemon, main, run_ctl, test  # noqa: E402


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
        deadline = time.time() + 10
        while run_ctl(d, "images", "list", key=fresh).returncode != 0:
            assert time.time() < deadline, "the daemon did not reload its keys"
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


main()
