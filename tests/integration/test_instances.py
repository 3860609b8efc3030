#!/usr/bin/env python3
"""Instances against the real daemon: lifecycle, replay after a crash, signals, stop, timeouts,
races, isolation and bad input. The workflows are shell scripts that speak the instance API with
curl over the unix socket (docs/instance-api.md).

They run under the native runner, or with RUNTARA_TEST_RUNNER=oci (test_instances_oci) in
containers of the OCI runner: the host's /usr (sh, curl, coreutils) bound read-only into each
with RUNTARA_OCI_MOUNTS, and the scratch directories the programs report through ($OUT) bound
writable. A program is then pid 1 of its container, which no signal from inside it kills: tests
that kill one do it from the host (program_pid())."""
import concurrent.futures
import hashlib
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import Daemon, error_of, main, test, deadline_in, skip_if  # noqa: E402
from programs import LOOP, PRELUDE  # noqa: E402

RUNNER = os.environ.get("RUNTARA_TEST_RUNNER", "native")


def daemon(env=None, **kw):
    """A daemon (not started) whose programs see $OUT directories: <tmp>/out/NAME (scratch())."""
    d = Daemon(env=env, **kw)
    out = os.path.join(d.tmp, "out")
    os.makedirs(out)
    os.chmod(out, 0o777)  # the containers' user writes there
    if RUNNER == "oci":
        d.env["RUNTARA_OCI_MOUNTS"] = f"/usr,/bin,/lib,/lib64,{out}:rw"
    return d


def image(d, body, tenant="acme", name="wf", key=None):
    r = d.upload(tenant, name, (PRELUDE + body).encode(), extra=f"&runner_type={RUNNER}", key=key)
    assert r.status == 201, r
    return r.json()["image_id"]


def start(d, img, key=None, expect=201, **fields):
    body = {"image_id": img}
    body.update(fields)
    r = d.request("POST", "/api/v1/instances", json_body=body, key=key)
    assert r.status == expect, r
    return r.json()


def wait(d, iid, key=None, timeout=30, statuses=("completed", "failed", "cancelled", "suspended")):
    deadline = deadline_in(timeout)
    while time.monotonic() < deadline:
        r = d.request("GET", f"/api/v1/instances/{iid}?wait=10s", key=key)
        assert r.status == 200, r
        inst = r.json()
        if inst["status"] in statuses:
            return inst
    raise AssertionError(f"instance {iid} did not settle: {inst}")


def wait_exit_recorded(d, iid, key=None):
    """The exit code arrives a moment after a reported end."""
    for _ in range(750):
        inst = d.request("GET", f"/api/v1/instances/{iid}", key=key).json()
        if inst["exit_code"] is not None:
            return inst
        time.sleep(0.02)
    raise AssertionError(f"no exit code recorded: {inst}")


def wait_file(path, timeout=20):
    deadline = deadline_in(timeout)
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.02)


def events(d, iid):
    return [e["type"] for e in d.request("GET", f"/api/v1/instances/{iid}/events").json()["events"]]


def scratch(d, name):
    p = os.path.join(d.tmp, "out", name)
    os.makedirs(p, exist_ok=True)
    os.chmod(p, 0o777)
    return p


def host_socket(d, addr):
    """The instance API's socket, on the host, of RUNTARA_SERVER_ADDR as a program saw it: in a
    container its directory is DATA_DIR/oci/socket, mounted at /run/runtara."""
    path = addr.removeprefix("unix:")
    if RUNNER == "oci" and path.startswith("/run/runtara/"):
        return os.path.join(d.data_dir, "oci", "socket", os.path.basename(path))
    return path


def program_pid(out, iid):
    """The host pid of the program that wrote its $$ to $OUT/pid: that number natively; in a
    container, the process of the instance that has it as its pid in its own namespace. The shell
    creates the file before it writes the line, so a reader can find it empty: the line counts
    once it is whole."""
    path, deadline = os.path.join(out, "pid"), deadline_in(20)
    while True:
        text = open(path).read() if os.path.exists(path) else ""
        if text.endswith("\n"):
            break
        assert time.monotonic() < deadline, f"{path} holds no whole line: {text!r}"
        time.sleep(0.02)
    pid = int(text)
    if RUNNER != "oci":
        return pid
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/status") as f:
                nspid = [ln.split()[1:] for ln in f if ln.startswith("NSpid:")]
            with open(f"/proc/{p}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if nspid and nspid[0][-1] == str(pid) and f"RUNTARA_INSTANCE_ID={iid}".encode() in env:
            return int(p)
    raise AssertionError(f"no process of {iid} has pid {pid} in its namespace")


def start_and_approve(d, img, iid):
    """Start iid, wait until its program says it is waiting ($OUT/waiting), and send it the
    custom signal "approval"; returns the program's $OUT directory."""
    out = scratch(d, "out")
    start(d, img, instance_id=iid, env={"OUT": out})
    wait_file(os.path.join(out, "waiting"))
    r = d.request("POST", f"/api/v1/instances/{iid}/signals/custom",
                  json_body={"wait_key": "approval", "payload": {"by": "ada"}})
    assert r.status == 202, r
    return out


@test
def a_workflow_runs_to_completion():
    d = daemon().start()
    try:
        img = image(d, 'in=$(api /input)\nstep 1 >/dev/null\ncomplete "{\\"in\\": $in}"\n')
        out = scratch(d, "out")
        inst = start(d, img, instance_id="w1", input={"x": 1}, env={"OUT": out})
        assert inst["status"] in ("pending", "running") and inst["instance_id"] == "w1"
        done = wait(d, "w1")
        assert done["status"] == "completed" and done["termination_reason"] == "completed", done
        assert done["output"] == {"in": {"x": 1}}, done
        assert done["attempt"] == 1 and done["checkpoint_id"] == "step1"
        assert wait_exit_recorded(d, "w1")["exit_code"] == 0
        ev = events(d, "w1")
        for t in ("started", "registered", "checkpoint", "completed", "exited"):
            assert t in ev, ev
        cps = d.request("GET", "/api/v1/instances/w1/checkpoints").json()["checkpoints"]
        assert [(c["key"], c["size_bytes"]) for c in cps] == [("step1", 8)]
        raw = d.request("GET", "/api/v1/instances/w1/checkpoints/step1")
        assert raw.body == b"result-1" and raw.header("Content-Type") == "application/octet-stream"
        run = os.path.join(d.data_dir, "tenants", "acme", "runs", "w1")
        assert json.load(open(os.path.join(run, "input.json"))) == {"x": 1}
    finally:
        d.cleanup()


def traced_start(strsize, syscalls):
    """Start an instance "durable" (its program completes at once) on a daemon run under strace
    (-f -y, -s strsize, -e trace=syscalls), stop the daemon, and return the trace's lines as
    (tid, call) pairs."""
    trace = os.path.join(tempfile.mkdtemp(prefix="runtara-it-"), "trace")
    # LeakSanitizer's exit check stops the threads with ptrace, which strace holds already
    d = daemon(env={"ASAN_OPTIONS": "detect_leaks=0"},
               wrapper=["strace", "-f", "-y", "-s", str(strsize), "-o", trace,
                        "-e", f"trace={syscalls}"]).start()
    try:
        img = image(d, "complete '{}'\n")
        start(d, img, instance_id="durable")
        assert wait(d, "durable")["status"] == "completed"
        with open(f"/proc/{d.proc.pid}/task/{d.proc.pid}/children") as f:
            daemon_pid = int(f.read().split()[0])
        os.kill(daemon_pid, signal.SIGTERM)
        assert d.proc.wait(20) == 0
    finally:
        d.cleanup()
    with open(trace) as f:
        lines = [line.split(None, 1) for line in f if line[:1].isdigit()]
    shutil.rmtree(os.path.dirname(trace))
    return lines


@test
@skip_if(harness.STORE == "postgres", "it traces SQLite's WAL; on PostgreSQL "
         "a_start_is_acknowledged_only_after_its_commit_returns traces the COMMIT")
def a_start_is_acknowledged_only_once_durable():
    """The POST's launch overlaps the sync of its commit (the store's visible hook), but not its
    201: between the request and the 201, a thread writes the row to the WAL and then syncs the
    WAL, and the sync ends before the 201 goes out (src/store/README.md). The thread is the
    leader of the batch that holds the row, which need not be the one that answers."""
    lines = traced_start(48, "pwrite64,fdatasync,recvfrom,sendmsg,writev")

    def on_wal(call, name):
        return call.startswith(name + "(") and "-wal>" in call.split(",", 1)[0]

    def ended(i):
        """The line where the call begun on line i returned."""
        tid, call = lines[i]
        if "<unfinished ...>" not in call:
            return i
        name = call.split("(", 1)[0]
        return next(j for j in range(i + 1, len(lines))
                    if lines[j][0] == tid and lines[j][1].startswith(f"<... {name} resumed>"))

    # the bytes read are printed where recvfrom returns: on its line, or on its "resumed" line;
    # the connection gate only peeks at them (MSG_PEEK) before the server reads them
    posts = [(i, tid) for i, (tid, call) in enumerate(lines)
             if call.startswith(("recvfrom(", "<... recvfrom resumed>")) and
             "POST /api/v1/instances HTTP" in call and "MSG_PEEK" not in call]
    assert len(posts) == 1, posts
    at, tid = posts[0]
    created = next(i for i, (t, call) in enumerate(lines)
                   if i > at and t == tid and "201 Created" in call)
    window = range(at + 1, created)
    durable = [i for i in window if on_wal(lines[i][1], "fdatasync") and ended(i) < created and
               any(lines[j][0] == lines[i][0] and on_wal(lines[j][1], "pwrite64")
                   for j in range(at + 1, i))]
    assert durable, "no thread wrote the WAL and then synced it between the request and its " \
        "201:\n" + "".join(f"{t} {c}" for t, c in (lines[i] for i in window)
                            if "-wal>" in c or "resumed" in c)


@test
@skip_if(harness.STORE != "postgres", "the SQLite store's is the WAL trace above")
def a_start_is_acknowledged_only_after_its_commit_returns():
    """On PostgreSQL a write is durable when its COMMIT returns: between the POST and its 201, a
    thread sends the row's INSERT and then COMMIT on one connection to the server, and receives
    the server's "COMMIT" reply, before the 201 goes out."""
    lines = traced_start(64, "sendto,recvfrom,sendmsg")

    def fd_of(call):
        return call.split("(", 1)[1].split("<", 1)[0] if "(" in call else None

    def resumed(i, name):
        """The line where the call begun on line i returned, and that line."""
        tid, call = lines[i]
        if "<unfinished ...>" not in call:
            return i, call
        j = next(j for j in range(i + 1, len(lines))
                 if lines[j][0] == tid and lines[j][1].startswith(f"<... {name} resumed>"))
        return j, lines[j][1]

    posts = [i for i, (_, call) in enumerate(lines)
             if call.startswith(("recvfrom(", "<... recvfrom resumed>")) and
             "POST /api/v1/instances HTTP" in call and "MSG_PEEK" not in call]
    assert len(posts) == 1, posts
    at, tid = posts[0], lines[posts[0]][0]
    created = next(i for i, (t, call) in enumerate(lines)
                   if i > at and t == tid and "201 Created" in call)
    inserts = [i for i in range(at + 1, created) if lines[i][1].startswith("sendto(") and
               "INSERT INTO instances" in lines[i][1] or
               (lines[i][1].startswith("sendto(") and "\\7durable" in lines[i][1])]
    commits = [i for i in range(at + 1, created)
               if lines[i][1].startswith("sendto(") and '"Q\\0\\0\\0\\vCOMMIT\\0"' in lines[i][1]]
    ok = []
    for c in commits:
        conn, t = fd_of(lines[c][1]), lines[c][0]
        if not any(fd_of(lines[i][1]) == conn for i in inserts if i < c):
            continue
        replies = [j for j in range(c + 1, created)
                   if lines[j][0] == t and lines[j][1].startswith("recvfrom(") and
                   fd_of(lines[j][1]) == conn]
        if replies:
            end, call = resumed(replies[0], "recvfrom")
            if end < created and '"C\\0\\0\\0\\vCOMMIT\\0' in call:
                ok.append(c)
    assert ok, "no thread sent the row and then COMMIT, and got COMMIT back, between the " \
        "request and its 201:\n" + "".join(f"{t} {c}" for t, c in lines[at:created + 1])


@test
def a_long_poll_that_runs_again_is_logged_once():
    """?wait runs its handler again when woken (here by its deadline); its access-log line still
    names the instance once."""
    d = daemon().start()
    try:
        img = image(d, 'sleep 30\n')
        start(d, img, instance_id="w2")
        wait(d, "w2", statuses=("running",))
        r = d.request("GET", "/api/v1/instances/w2?wait=1s", headers={"X-Request-Id": "wait-w2"})
        assert r.status == 200 and r.json()["status"] == "running", r
        d.wait_log("req=wait-w2")
        line = [ln for ln in d.logs().splitlines() if "req=wait-w2" in ln][0]
        assert line.count("instance=w2") == 1 and "ms=1" in line, line
    finally:
        d.cleanup()


@test
def exits_without_a_report_end_by_their_status():
    d = daemon().start()
    try:
        ok = image(d, 'echo \'{"from":"file"}\' > output.json\nexit 0\n', name="ok")
        bad = image(d, "echo oops >&2\nexit 3\n", name="bad")
        killed = image(d, 'echo $$ > "$OUT/pid"\nsleep 60\n', name="killed")
        failing = image(d, 'api /failed -X POST -H "Content-Type: application/json" '
                           '-d \'{"error":"no luck","detail":{"code":7}}\' >/dev/null\n', name="f")
        start(d, ok, instance_id="ok")
        start(d, bad, instance_id="bad")
        out = scratch(d, "out")
        start(d, killed, instance_id="killed", env={"OUT": out})
        start(d, failing, instance_id="failing")
        a = wait(d, "ok")
        assert (a["status"], a["output"], a["exit_code"]) == ("completed", {"from": "file"}, 0), a
        b = wait(d, "bad")
        assert (b["status"], b["termination_reason"], b["exit_code"]) == ("failed", "crashed", 3)
        assert "status 3" in b["error"], b
        logs = d.request("GET", "/api/v1/instances/bad/logs")
        assert logs.status == 200 and b"oops" in logs.body, logs
        os.kill(program_pid(out, "killed"), signal.SIGKILL)  # from the host: see the docstring
        c = wait(d, "killed")
        assert (c["status"], c["exit_code"]) == ("failed", 137) and "signal 9" in c["error"], c
        f = wait(d, "failing")
        assert (f["status"], f["termination_reason"]) == ("failed", "application_error"), f
        assert f["error"].startswith("no luck") and '"code":7' in f["error"], f
    finally:
        d.cleanup()


def raw_image(d, script, name):
    """An image whose program does not register first (no PRELUDE)."""
    r = d.upload("acme", name, script.encode(), extra=f"&runner_type={RUNNER}")
    assert r.status == 201, r
    return r.json()["image_id"]


@test
def a_launch_is_recorded_by_the_programs_first_call_or_soon_after_its_start():
    """The supervisor does not commit a launch (running, "started") while the program starts: the
    program's first call records it (a register with its own event, in one commit), or the
    supervisor RUNTARA_LAUNCH_RECORD_MS after the start, or at the exit; "started" comes first."""
    d = daemon(env={"RUNTARA_LAUNCH_RECORD_MS": "60000"}).start()  # only the program records
    try:
        out = scratch(d, "out")
        reg = image(d, 'touch "$OUT/up.reg"\nsleep 30\n', name="reg")
        silent = raw_image(d, '#!/bin/sh\ntouch "$OUT/up.silent"\nsleep 30\n', "silent")
        done_first = raw_image(d, PRELUDE.replace("api /register -X POST >/dev/null\n", "") +
                               'complete \'{"first": true}\'\n', "done-first")
        quick = raw_image(d, "#!/bin/sh\nexit 0\n", "quick")
        for iid, img in (("reg", reg), ("silent", silent), ("done-first", done_first),
                         ("quick", quick)):
            start(d, img, instance_id=iid, env={"OUT": out})

        wait_file(os.path.join(out, "up.reg"))
        inst = d.request("GET", "/api/v1/instances/reg").json()
        assert (inst["status"], inst["attempt"]) == ("running", 1), inst
        ev = d.request("GET", "/api/v1/instances/reg/events").json()["events"]
        assert [e["type"] for e in ev] == ["started", "registered"], ev
        assert ev[0]["created_at"] == ev[1]["created_at"], ev  # one commit

        f = wait(d, "done-first")
        assert (f["status"], f["output"], f["attempt"]) == ("completed", {"first": True}, 1), f
        assert events(d, "done-first")[:2] == ["started", "completed"], events(d, "done-first")

        q = wait_exit_recorded(d, "quick")
        assert (q["status"], q["attempt"], q["exit_code"]) == ("completed", 1, 0), q
        assert events(d, "quick") == ["started", "exited", "completed"], events(d, "quick")

        wait_file(os.path.join(out, "up.silent"))  # runs, and is not recorded for a minute
        inst = d.request("GET", "/api/v1/instances/silent").json()
        assert (inst["status"], inst["attempt"]) == ("pending", 0), inst
        for iid in ("reg", "silent"):
            assert d.request("POST", f"/api/v1/instances/{iid}/stop",
                             json_body={"grace_secs": 0}).status == 202
            st = wait(d, iid)
            assert (st["status"], st["attempt"]) == ("cancelled", 1), st
            assert events(d, iid)[0] == "started", events(d, iid)
    finally:
        d.cleanup()

    # recorded by the program's first call, then the daemon's timer: it must not touch the
    # process, which reported its end and exits in its own time
    d = daemon(env={"RUNTARA_LAUNCH_RECORD_MS": "300"}).start()
    try:
        late = raw_image(d, PRELUDE.replace("api /register -X POST >/dev/null\n", "") +
                         'complete \'{"late": true}\'\nsleep 1\n', "late-exit")
        start(d, late, instance_id="late")
        q = wait_exit_recorded(d, "late")
        assert (q["status"], q["output"], q["exit_code"]) == ("completed", {"late": True}, 0), q
    finally:
        d.cleanup()

    d = daemon().start()  # the default: the daemon records a silent program's launch soon
    try:
        out = scratch(d, "out")
        silent = raw_image(d, '#!/bin/sh\ntouch "$OUT/up.silent"\nsleep 30\n', "silent")
        start(d, silent, instance_id="silent", env={"OUT": out})
        wait_file(os.path.join(out, "up.silent"))
        deadline = deadline_in(10)
        while d.request("GET", "/api/v1/instances/silent").json()["status"] == "pending":
            assert time.monotonic() < deadline, "a silent program's launch was never recorded"
            time.sleep(0.01)
        inst = d.request("GET", "/api/v1/instances/silent").json()
        assert (inst["status"], inst["attempt"]) == ("running", 1), inst
        assert events(d, "silent") == ["started"], events(d, "silent")
    finally:
        d.cleanup()


STEPS = r'''
echo $$ > "$OUT/pid"
step 1 >/dev/null
step 2 >/dev/null
if [ "$RUNTARA_ATTEMPT" = 1 ]; then touch "$OUT/after2"; sleep 60; fi
step 3 >/dev/null
step 4 >/dev/null
complete "{\"attempt\": $RUNTARA_ATTEMPT, \"last\": \"$(step 4)\"}"
'''


@test
def a_signal_delivered_into_a_checkpoint_survives_a_lost_reply():
    """POST /wait with "checkpoint" saves the signal's payload in the transaction that takes it:
    a program that dies before it reads the reply finds the signal in its relaunch."""
    d = daemon().start()
    try:
        img = image(d, r'''if r=$(api /checkpoints/approval 2>/dev/null); then
    complete "{\"got\": $r, \"attempt\": $RUNTARA_ATTEMPT}"; exit 0
fi
touch "$OUT/waiting"
while [ ! -e "$OUT/sent" ]; do sleep 0.02; done
api /wait -X POST -H 'Content-Type: application/json' \
    -d '{"wait_key": "approval", "checkpoint": "approval"}' > "$OUT/reply"
exit 9  # dies without a word (pid 1 of a container cannot kill -9 itself)
''')
        out = start_and_approve(d, img, "lost")
        open(os.path.join(out, "sent"), "w").close()
        dead = wait(d, "lost")
        assert (dead["status"], dead["checkpoint_id"]) == ("failed", "approval"), dead
        with open(os.path.join(out, "reply")) as f:
            reply = json.load(f)
        assert reply["signal"]["payload"] == {"by": "ada"}, reply
        assert d.request("POST", "/api/v1/instances/lost/resume").status == 202
        done = wait(d, "lost")
        assert done["status"] == "completed", done
        assert done["output"] == {"got": {"by": "ada"}, "attempt": 2}, done
    finally:
        d.cleanup()


@test
def a_custom_signal_long_polled_into_a_checkpoint_survives_a_lost_reply():
    """GET /signals?wait_key=K&checkpoint=C takes the signal and saves its payload under C in one
    transaction, also when it arrives while the request waits: a program that dies before it
    reads the reply finds it in its relaunch. A repeat is a 409 at once and takes nothing."""
    d = daemon().start()
    try:
        img = image(d, r'''if r=$(api /checkpoints/approval 2>/dev/null); then
    again=$(api "/signals?wait_key=approval")
    complete "{\"got\": $r, \"again\": $again, \"attempt\": $RUNTARA_ATTEMPT}"; exit 0
fi
code() { curl -s -o "$OUT/body$1" -w "%{http_code}\n" --unix-socket "$sock" \
    -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
    "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/signals?$2" >> "$OUT/codes"; }
code 1 'checkpoint=approval'
code 2 'wait_key=approval&checkpoint=%21%21'
code 3 'wait_key=approval&checkpoint'
code 4 'wait_key=approval&checkpoint=approval'
touch "$OUT/waiting"
api "/signals?wait=30s&wait_key=approval&checkpoint=approval" > "$OUT/reply"
touch "$OUT/replied"
while [ ! -e "$OUT/sent2" ]; do sleep 0.02; done
code 5 'wait=30s&wait_key=approval&checkpoint=approval'
exit 9  # dies without a word (pid 1 of a container cannot kill -9 itself)
''')
        out = scratch(d, "out")
        start(d, img, instance_id="lp", env={"OUT": out})
        wait_file(os.path.join(out, "waiting"))
        deadline = deadline_in(10)
        while "runtara_long_polls_waiting 1\n" not in d.request("GET", "/metrics").body.decode():
            assert time.monotonic() < deadline, "the long poll was not parked"
            time.sleep(0.01)
        for payload in ({"by": "ada"}, {"by": "bob"}):
            r = d.request("POST", "/api/v1/instances/lp/signals/custom",
                          json_body={"wait_key": "approval", "payload": payload})
            assert r.status == 202, r
            wait_file(os.path.join(out, "replied"))  # the first is taken before the second
        t = time.monotonic()
        open(os.path.join(out, "sent2"), "w").close()
        dead = wait(d, "lp")
        assert time.monotonic() - t < 10, "the repeat waited instead of a 409 at once"
        assert (dead["status"], dead["checkpoint_id"]) == ("failed", "approval"), dead
        with open(os.path.join(out, "codes")) as f:
            assert f.read().split() == ["400", "400", "400", "200", "409"], "codes"
        with open(os.path.join(out, "body1")) as f:
            assert "without wait_key" in json.load(f)["error"]["message"]
        with open(os.path.join(out, "body3")) as f:
            assert "has no value" in json.load(f)["error"]["message"]
        with open(os.path.join(out, "body4")) as f:
            assert json.load(f) == {"signal": None}  # nothing sent yet, nothing saved
        with open(os.path.join(out, "reply")) as f:
            assert json.load(f)["signal"]["payload"] == {"by": "ada"}
        raw = d.request("GET", "/api/v1/instances/lp/checkpoints/approval")
        assert json.loads(raw.body) == {"by": "ada"}, raw
        assert d.request("POST", "/api/v1/instances/lp/resume").status == 202
        done = wait(d, "lp")
        bob = {"type": "custom", "wait_key": "approval", "payload": {"by": "bob"}}
        assert (done["status"], done["output"]) == \
            ("completed", {"got": {"by": "ada"}, "again": {"signal": bob}, "attempt": 2}), done
    finally:
        d.cleanup()


@test
def an_event_repeated_with_its_key_is_recorded_once():
    """POST /events with a key, twice (as the SDK repeats a report after a lost reply): one
    event, 201 then 200 with the same id; a bad key is refused."""
    d = daemon().start()
    try:
        img = image(d, r'''ev() { curl -s -o /dev/null -w "%{http_code}" --unix-socket "$sock" \
        -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" -H 'Content-Type: application/json' \
        -X POST -d "$1" "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/events"; }
a=$(ev '{"type": "custom", "subtype": "paid", "payload": 1, "key": "r1.1"}')
b=$(ev '{"type": "custom", "subtype": "paid", "payload": 2, "key": "r1.1"}')
c=$(ev '{"type": "custom", "subtype": "paid", "payload": 3, "key": "no/slash"}')
complete "[$a, $b, $c]"
''')
        start(d, img, instance_id="ev1")
        done = wait(d, "ev1")
        assert done["output"] == [201, 200, 400], done
        paid = [e for e in d.request("GET", "/api/v1/instances/ev1/events?type=custom")
                .json()["events"]]
        assert [(e["subtype"], e["payload"]) for e in paid] == [("paid", 1)], paid
    finally:
        d.cleanup()


@test
def kill_9_after_step_2_and_resume_replays_finished_steps():
    d = daemon().start()
    try:
        img = image(d, STEPS)
        out = scratch(d, "out")
        start(d, img, instance_id="k9", env={"OUT": out}, input={"n": 4})
        wait_file(os.path.join(out, "after2"))
        os.kill(program_pid(out, "k9"), signal.SIGKILL)
        dead = wait(d, "k9")
        assert (dead["status"], dead["termination_reason"], dead["exit_code"]) == \
            ("failed", "crashed", 137), dead
        r = d.request("POST", "/api/v1/instances/k9/resume")
        assert r.status == 202, r
        done = wait(d, "k9")
        assert done["status"] == "completed", done
        assert done["output"] == {"attempt": 2, "last": "result-4"}, done
        assert done["attempt"] == 2 and done["input"] == {"n": 4}
        with open(os.path.join(out, "steps.log")) as f:
            assert f.read() == "step 1\nstep 2\nstep 3\nstep 4\n"
        r = d.request("POST", "/api/v1/instances/k9/resume")
        assert r.status == 409 and "completed" in error_of(r)["message"], r
    finally:
        d.cleanup()


@test
def cancel_is_acted_on_at_the_next_check():
    d = daemon().start()
    try:
        img = image(d, LOOP)
        out = scratch(d, "out")
        start(d, img, instance_id="c1", env={"OUT": out})
        wait_file(os.path.join(out, "looping"))
        r = d.request("POST", "/api/v1/instances/c1/signals", json_body={"type": "cancel"})
        assert r.status == 202, r
        done = wait(d, "c1")
        assert (done["status"], done["termination_reason"]) == ("cancelled", "cancelled"), done
        assert open(os.path.join(out, "acked")).read() == "cancel\n"
        r = d.request("POST", "/api/v1/instances/c1/signals", json_body={"type": "pause"})
        assert r.status == 409, r
    finally:
        d.cleanup()


@test
def an_ignored_cancel_is_enforced_after_the_grace():
    d = daemon(env={"RUNTARA_CANCEL_GRACE_SECS": "1", "RUNTARA_STOP_GRACE_SECS": "1"}).start()
    try:
        img = image(d, 'touch "$OUT/up"\nsleep 60\n')
        out = scratch(d, "out")
        start(d, img, instance_id="c2", env={"OUT": out})
        wait_file(os.path.join(out, "up"))
        t0 = time.time()
        d.request("POST", "/api/v1/instances/c2/signals", json_body={"type": "cancel"})
        done = wait(d, "c2")
        assert (done["status"], done["termination_reason"]) == ("cancelled", "cancelled"), done
        assert 0.9 < time.time() - t0 < 10
    finally:
        d.cleanup()


@test
def pause_suspends_and_resume_continues_from_checkpoints():
    d = daemon().start()
    try:
        img = image(d, LOOP)
        out = scratch(d, "out")
        start(d, img, instance_id="p1", env={"OUT": out})
        wait_file(os.path.join(out, "looping"))
        assert d.request("POST", "/api/v1/instances/p1/signals",
                         json_body={"type": "pause"}).status == 202
        susp = wait(d, "p1")
        assert (susp["status"], susp["termination_reason"]) == ("suspended", "paused"), susp
        r = d.request("POST", "/api/v1/instances/p1/signals", json_body={"type": "resume"})
        assert r.status == 202, r
        done = wait(d, "p1")
        assert done["status"] == "completed" and done["output"] == {"attempt": 2}, done
        steps = open(os.path.join(out, "steps.log")).read().split("\n")
        assert len([s for s in steps if s]) == len(set(s for s in steps if s)) <= 3, steps
    finally:
        d.cleanup()


def spare_of(d):
    return os.path.join(d.data_dir, ".spare-run")


def wait_spare(d, not_ino=None):
    """The spare run directory, once made (its files created empty; stderr.log is the shim's to
    make, at the first output): its inode."""
    deadline = deadline_in(20)
    while True:
        try:
            ino = os.stat(spare_of(d)).st_ino
            files = {f: os.path.getsize(os.path.join(spare_of(d), f))
                     for f in os.listdir(spare_of(d))}
            if ino != not_ino and files == {"input.json": 0, "shim.lock": 0}:
                return ino
        except FileNotFoundError:
            pass
        assert time.monotonic() < deadline, "no spare run directory was made"
        time.sleep(0.01)


@test
def a_new_run_directory_is_the_spare_made_ahead():
    """An instance's first launch renames the run directory made ahead (DATA_DIR/.spare-run, its
    files created empty) into place and writes input.json in it; a relaunch keeps its own
    directory and leaves the spare alone. A spare an earlier daemon left is made again."""
    d = daemon()
    left = os.path.join(spare_of(d), "left-behind")
    os.makedirs(left)
    d.start()
    try:
        ino = wait_spare(d)
        assert not os.path.exists(left)
        img = image(d, LOOP)
        out = scratch(d, "out")
        start(d, img, instance_id="p1", input={"x": 1}, env={"OUT": out})
        wait_file(os.path.join(out, "looping"))
        run = os.path.join(d.data_dir, "tenants", "acme", "runs", "p1")
        assert os.stat(run).st_ino == ino  # the spare, renamed (the tenant's runs/ made for it)
        assert json.load(open(os.path.join(run, "input.json"))) == {"x": 1}
        # the shim's: attempt 1, then its program's process group and the boot
        lock = open(os.path.join(run, "shim.lock")).read().split("\n")
        what = lock[1].split()[0]  # a process group, or the container
        assert lock[0] == "1" and (what.isdigit() if RUNNER == "native" else
                                   what.startswith("oci:rt-acme_p1-1-")), lock
        ino2 = wait_spare(d, not_ino=ino)  # the next one

        assert d.request("POST", "/api/v1/instances/p1/signals",
                         json_body={"type": "pause"}).status == 202
        assert wait(d, "p1")["status"] == "suspended"
        assert d.request("POST", "/api/v1/instances/p1/signals",
                         json_body={"type": "resume"}).status == 202
        done = wait(d, "p1")
        assert (done["status"], done["output"]) == ("completed", {"attempt": 2}), done
        assert os.stat(run).st_ino == ino and os.stat(spare_of(d)).st_ino == ino2
        assert json.load(open(os.path.join(run, "input.json"))) == {"x": 1}
        d.stop()
        assert not os.path.exists(spare_of(d))  # removed at shutdown
    finally:
        d.cleanup()

    # a tenant's directory on another file system: the spare cannot be renamed there, so run
    # directories are created at launch, and no spare is made any more
    d = daemon()
    other = [p for p in ("/dev/shm", "/run", "/var/tmp", "/tmp")
             if os.path.isdir(p) and os.access(p, os.W_OK) and
             os.stat(p).st_dev != os.stat(d.tmp).st_dev]
    if not other:
        print(f"# SKIPPED: the second half needs a writable file system other than {d.tmp}'s")
        d.cleanup()
        return
    elsewhere = tempfile.mkdtemp(prefix="runtara-it-", dir=other[0])
    os.makedirs(os.path.join(d.data_dir, "tenants"))
    os.symlink(elsewhere, os.path.join(d.data_dir, "tenants", "acme"))
    d.start()
    try:
        wait_spare(d)
        img = image(d, 'complete "$(api /input)"\n')
        for iid in ("x1", "x2"):
            start(d, img, instance_id=iid, input={"iid": iid})
            done = wait(d, iid)
            assert (done["status"], done["output"]) == ("completed", {"iid": iid}), done
            assert not os.path.exists(spare_of(d))
            assert os.path.isdir(os.path.join(elsewhere, "runs", iid))
        assert d.logs().count("could not rename the spare run directory") == 1, d.logs()
    finally:
        d.cleanup()
        shutil.rmtree(elsewhere, ignore_errors=True)


# A program that reports the connection made ahead for it (RUNTARA_SERVER_FD) and registers on
# it by hand, as libruntara does; its output says what it found.
AHEAD = r"""#!/usr/bin/env python3
import json, os, socket
fd = os.environ.get("RUNTARA_SERVER_FD")
out = {"fd": fd, "ppid_ok": os.environ.get("RUNTARA_SERVER_FD_PPID") == str(os.getppid())}
if fd:
    s = socket.socket(fileno=int(fd))
    out["peer"] = s.getpeername()
    s.sendall(("POST /api/v1/instances/%s/register HTTP/1.1\r\nHost: runtara\r\n"
               "Authorization: Bearer %s\r\nContent-Length: 0\r\n\r\n"
               % (os.environ["RUNTARA_INSTANCE_ID"], os.read(4, 256).decode())).encode())
    out["reply"] = s.recv(65536).split(b"\r\n")[0].decode()
json.dump(out, open("output.json", "w"))
"""


@test
@skip_if(RUNNER == "oci", "the connection made ahead is the native shim's; a container's "
         "program connects itself")
def a_program_gets_a_connection_to_the_instance_api_made_ahead():
    """The shim connects to the instance API when its launch comes and hands the program that
    connection as fd 3 (RUNTARA_SERVER_FD, RUNTARA_SERVER_FD_PPID = the shim, its parent), so
    its first request needs no connect(). Not while it is idle: the connection gate would close
    a connection without a request at its header deadline, however long the shim waits."""
    d = daemon().start()
    try:
        img = raw_image(d, AHEAD, "ahead")
        start(d, img, instance_id="a1")
        done = wait(d, "a1")
        want = {"fd": "3", "ppid_ok": True, "peer": os.path.join(d.data_dir, "core.sock"),
                "reply": "HTTP/1.1 200 OK"}
        assert (done["status"], done["output"]) == ("completed", want), done
        events = d.request("GET", "/api/v1/instances/a1/events").json()["events"]
        assert [e["type"] for e in events].count("registered") == 1, events
    finally:
        d.cleanup()

    d = daemon(env={"RUNTARA_HTTP_HEADER_TIMEOUT_SECS": "1",
                    "RUNTARA_HTTP_IDLE_TIMEOUT_SECS": "1"}).start()
    try:
        img = raw_image(d, AHEAD, "ahead")
        time.sleep(3)  # the idle shim, made at start-up, waits past both deadlines
        start(d, img, instance_id="a2")
        done = wait(d, "a2")
        want["peer"] = os.path.join(d.data_dir, "core.sock")
        assert (done["status"], done["output"]) == ("completed", want), done
        metrics = d.request("GET", "/metrics").body.decode()
        assert 'runtara_http_connections_refused_total{reason="header_timeout"} 0' in metrics
    finally:
        d.cleanup()


@test
def stop_runs_the_programs_sigterm_handler_then_kills():
    d = daemon().start()
    try:
        graceful = image(d, 'trap \'touch "$OUT/term"; exit 0\' TERM\ntouch "$OUT/up"\n'
                            'while :; do sleep 0.05; done\n', name="graceful")
        stubborn = image(d, 'trap "" TERM\ntouch "$OUT/up2"\nwhile :; do sleep 0.05; done\n',
                         name="stubborn")
        out = scratch(d, "out")
        start(d, graceful, instance_id="s1", env={"OUT": out})
        start(d, stubborn, instance_id="s2", env={"OUT": out})
        wait_file(os.path.join(out, "up"))
        wait_file(os.path.join(out, "up2"))
        assert d.request("POST", "/api/v1/instances/s1/stop",
                         json_body={"grace_secs": 10}).status == 202
        t0 = time.time()
        r = d.request("POST", "/api/v1/instances/s2/stop", json_body={"grace_secs": 1})
        assert r.status == 202, r
        a = wait(d, "s1")
        assert (a["status"], a["termination_reason"]) == ("cancelled", "stopped"), a
        assert os.path.exists(os.path.join(out, "term")), "the SIGTERM handler ran"
        b = wait(d, "s2")
        assert (b["status"], b["termination_reason"], b["exit_code"]) == \
            ("cancelled", "stopped", 137), b
        assert time.time() - t0 >= 0.9
        r = d.request("POST", "/api/v1/instances/s1/stop")
        assert r.status == 409, r
    finally:
        d.cleanup()


@test
def the_timeout_is_enforced():
    d = daemon(env={"RUNTARA_STOP_GRACE_SECS": "1"}).start()
    try:
        img = image(d, "sleep 60\n")
        t0 = time.time()
        start(d, img, instance_id="t1", timeout_secs=1)
        done = wait(d, "t1")
        assert (done["status"], done["termination_reason"]) == ("failed", "timeout"), done
        assert 0.9 < time.time() - t0 < 10
    finally:
        d.cleanup()


@test
@skip_if(RUNNER == "oci", "a container's processes all end with it: no upload outlives it")
def a_checkpoint_upload_that_outlives_its_launch_stores_nothing():
    """The launch is checked again in the save's transaction: a body still arriving when the
    instance is stopped is answered 409 and leaves no checkpoint behind."""
    d = daemon().start()
    try:
        # the upload runs in its own session, so the stop's kill of the program leaves it going;
        # its trace tells when the headers (and so the admission) are through
        img = image(d, r'''head -c 300000 /dev/zero > "$OUT/blob"
setsid sh -c 'curl -s -o /dev/null -w "%{http_code}" --limit-rate 100k --unix-socket "$0" \
    --trace-ascii "$OUT/trace" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" -X PUT \
    -H "Content-Type: application/octet-stream" --data-binary @"$OUT/blob" \
    "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID/checkpoints/late" > "$OUT/code.tmp"
    mv "$OUT/code.tmp" "$OUT/code"' "$sock" &
sleep 60
''')
        out = scratch(d, "out")
        start(d, img, instance_id="up1", env={"OUT": out})
        trace = os.path.join(out, "trace")
        deadline = deadline_in(30)
        while not (os.path.exists(trace) and "=> Send data" in open(trace).read()):
            assert time.monotonic() < deadline, "the upload did not begin"
            time.sleep(0.02)
        time.sleep(0.2)  # the headers are in: the save was admitted while the instance ran
        r = d.request("POST", "/api/v1/instances/up1/stop", json_body={"grace_secs": 0})
        assert r.status == 202, r
        assert wait(d, "up1")["status"] == "cancelled"
        wait_file(os.path.join(out, "code"), timeout=30)
        with open(os.path.join(out, "code")) as f:
            assert f.read() == "409", "the save after the stop was not refused"
        cps = d.request("GET", "/api/v1/instances/up1/checkpoints").json()["checkpoints"]
        assert cps == [], cps
        assert d.request("GET", "/api/v1/instances/up1").json()["checkpoint_id"] is None
    finally:
        d.cleanup()


@test
def stop_racing_completed_ends_in_one_state():
    d = daemon().start()
    try:
        img = image(d, 'while [ ! -e "$OUT/go" ]; do sleep 0.01; done\ncomplete \'"done"\'\n'
                       'sleep 1\n')
        outcomes = set()
        for i in range(16):
            out = scratch(d, f"race{i}")
            iid = f"race{i}"
            start(d, img, instance_id=iid, env={"OUT": out})
            while d.request("GET", f"/api/v1/instances/{iid}").json()["status"] != "running":
                time.sleep(0.01)
            time.sleep(0.05)
            open(os.path.join(out, "go"), "w").close()
            time.sleep(random.uniform(0, 0.06))  # land the stop before, during or after "done"
            d.request("POST", f"/api/v1/instances/{iid}/stop", json_body={"grace_secs": 0})
            final = wait(d, iid)
            wait_exit_recorded(d, iid)
            again = d.request("GET", f"/api/v1/instances/{iid}").json()
            assert again["status"] == final["status"], (final, again)
            assert final["status"] in ("completed", "cancelled"), final
            ends = [t for t in events(d, iid) if t in ("completed", "cancelled", "failed")]
            assert len(ends) == 1, events(d, iid)
            outcomes.add(final["status"])
        print(f"# race outcomes: {sorted(outcomes)}")
    finally:
        d.cleanup()


@test
def five_hundred_concurrent_instances_all_finish():
    d = daemon(env={"RUNTARA_LOG_LEVEL": "warning"}).start()
    try:
        img = image(d, 'complete "{\\"n\\": $(api /input)}"\n')
        ids = [f"m{i:03d}" for i in range(500)]
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            list(pool.map(lambda i: start(d, img, instance_id=i, input=int(i[1:])), ids))
        deadline = deadline_in(240)
        while True:
            counts = {}
            for st in ("pending", "running", "completed", "failed"):
                r = d.request("GET", f"/api/v1/instances?status={st}&limit=1")
                counts[st] = r.json()["total"]
            if counts["completed"] + counts["failed"] == 500 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert counts["completed"] == 500, counts
        total = d.request("GET", "/api/v1/instances?limit=1").json()["total"]
        assert total == 500
        seen, cursor = set(), None
        while True:
            page = d.request("GET", "/api/v1/instances?limit=200" +
                             (f"&cursor={cursor}" if cursor else "")).json()
            for inst in page["instances"]:
                assert inst["output"] == {"n": int(inst["instance_id"][1:])}, inst
                seen.add(inst["instance_id"])
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == set(ids)
    finally:
        d.cleanup()


class UnixHTTP:
    """Talk to the instance API over its unix socket, as a workflow program would."""

    def __init__(self, path):
        self.path = path

    def request(self, method, url, token, body=None, headers=None):
        """One request on a new connection. The daemon may refuse a body it will not read (413)
        and close before the client has sent it all: like a careful client, keep going and read
        the answer anyway."""
        import http.client
        import socket

        h = {"Host": "runtara", "Connection": "close", "Content-Length": str(len(body or b""))}
        h.update(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        head = f"{method} {url} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items())
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(30)
        sock.connect(self.path)
        try:
            sock.sendall(head.encode() + b"\r\n" + (body or b""))
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = http.client.HTTPResponse(sock)
        r.begin()
        data = r.read()
        sock.close()
        return r.status, dict(r.getheaders()), data


SPY = 'env | grep ^RUNTARA_ > "$OUT/env.$RUNTARA_ATTEMPT"\ntouch "$OUT/up.$RUNTARA_ATTEMPT"\nsleep 60\n'


def spied_env(out, attempt):
    wait_file(os.path.join(out, f"up.{attempt}"))
    env = {}
    for line in open(os.path.join(out, f"env.{attempt}")):
        k, _, v = line.rstrip("\n").partition("=")
        env[k] = v
    return env


@test
def tokens_bind_one_instance_and_one_launch():
    d = daemon().start()
    try:
        img = image(d, SPY)
        out_a, out_b = scratch(d, "a"), scratch(d, "b")
        start(d, img, instance_id="ia", env={"OUT": out_a})
        start(d, img, instance_id="ib", env={"OUT": out_b})
        a, b = spied_env(out_a, 1), spied_env(out_b, 1)
        core = UnixHTTP(host_socket(d, a["RUNTARA_SERVER_ADDR"]))
        assert a["RUNTARA_INSTANCE_ID"] == "ia" and a["RUNTARA_TENANT_ID"] == "acme"
        assert a["RUNTARA_INSTANCE_TOKEN"] != b["RUNTARA_INSTANCE_TOKEN"]

        st, _, body = core.request("GET", "/api/v1/instances/ia/input", a["RUNTARA_INSTANCE_TOKEN"])
        assert st == 200, body
        # a's token on b's instance, no token, a made-up token: all refused
        for url, tok in (("/api/v1/instances/ib/input", a["RUNTARA_INSTANCE_TOKEN"]),
                         ("/api/v1/instances/ia/input", None),
                         ("/api/v1/instances/ia/input", "0" * 64),
                         ("/api/v1/instances/nope/input", a["RUNTARA_INSTANCE_TOKEN"])):
            st, h, body = core.request("GET", url, tok)
            assert st == 401, (url, st, body)
        st, _, body = core.request("POST", "/api/v1/instances/ib/completed",
                                   a["RUNTARA_INSTANCE_TOKEN"], b'{"output": 1}',
                                   {"Content-Type": "application/json"})
        assert st == 401, body

        # the token of launch 1 stops working once launch 2 has its own
        d.request("POST", "/api/v1/instances/ia/stop", json_body={"grace_secs": 0})
        assert wait(d, "ia")["status"] == "cancelled"
        assert d.request("POST", "/api/v1/instances/ia/resume").status == 202
        a2 = spied_env(out_a, 2)
        assert a2["RUNTARA_ATTEMPT"] == "2"
        st, _, _ = core.request("GET", "/api/v1/instances/ia/input", a["RUNTARA_INSTANCE_TOKEN"])
        assert st == 401
        # a save too, though launch 1's token was seen running (saves are admitted from a memo of
        # such tokens, and the save's transaction refuses it): 401, and nothing stored
        st, _, body = core.request("PUT", "/api/v1/instances/ia/checkpoints/late",
                                   a["RUNTARA_INSTANCE_TOKEN"], b"x",
                                   {"Content-Type": "application/octet-stream"})
        assert st == 401, (st, body)
        st, _, _ = core.request("GET", "/api/v1/instances/ia/checkpoints/late",
                                a2["RUNTARA_INSTANCE_TOKEN"])
        assert st == 404, st
        st, _, _ = core.request("GET", "/api/v1/instances/ia/input", a2["RUNTARA_INSTANCE_TOKEN"])
        assert st == 200
        for iid in ("ia", "ib"):
            d.request("POST", f"/api/v1/instances/{iid}/stop", json_body={"grace_secs": 0})
            wait(d, iid)
    finally:
        d.cleanup()


def start_spied(d, iid, script):
    """Start instance iid of a program that records its RUNTARA_ variables in $OUT/env.1, then
    runs script, which touches $OUT/up.1 once it is past what the test waits for. Returns (that
    environment, a client of the instance API, $OUT)."""
    img = image(d, 'env | grep ^RUNTARA_ > "$OUT/env.1"\n' + script)
    out = scratch(d, iid)
    start(d, img, instance_id=iid, env={"OUT": out})
    env = spied_env(out, 1)
    return env, UnixHTTP(host_socket(d, env["RUNTARA_SERVER_ADDR"])), out


@test
def a_token_of_an_ended_launch_changes_nothing():
    """Once its launch has ended, a token gets 409 for every change: heartbeats and events too."""
    d = daemon().start()
    try:
        env, core, _ = start_spied(d, "ended", 'complete \'"done"\'\ntouch "$OUT/up.1"\nsleep 60\n')
        assert wait(d, "ended")["status"] == "completed"
        before = d.request("GET", "/api/v1/instances/ended").json()
        n_events = len(events(d, "ended"))
        tok = env["RUNTARA_INSTANCE_TOKEN"]
        st, _, body = core.request("POST", "/api/v1/instances/ended/heartbeat", tok)
        assert st == 409, (st, body)
        assert "the process should exit" in json.loads(body)["error"]["message"], body
        st, _, body = core.request("POST", "/api/v1/instances/ended/events", tok,
                                   b'{"type": "progress", "payload": 1}',
                                   {"Content-Type": "application/json"})
        assert st == 409, (st, body)
        after = d.request("GET", "/api/v1/instances/ended").json()
        assert after["heartbeat_at"] == before["heartbeat_at"], (before, after)
        assert len(events(d, "ended")) == n_events
    finally:
        d.cleanup()


def saved_once_then_stopped(d, iid):
    """Start instance iid of a program that reads its input (which puts its token in the memo of
    running launches) and sleeps; save checkpoint "one" with its token, then stop it. Returns
    save(key): a save with that token, as (status, body)."""
    env, core, _ = start_spied(d, iid, 'api /input > /dev/null\ntouch "$OUT/up.1"\nsleep 60\n')

    def save(key):
        st, _, body = core.request("PUT", f"/api/v1/instances/{iid}/checkpoints/{key}",
                                   env["RUNTARA_INSTANCE_TOKEN"], key.encode(),
                                   {"Content-Type": "application/octet-stream"})
        return st, body
    st, body = save("one")
    assert st == 201, (st, body)
    d.request("POST", f"/api/v1/instances/{iid}/stop", json_body={"grace_secs": 0})
    assert wait(d, iid)["status"] == "cancelled"
    return save


@test
def a_save_with_the_token_of_a_stopped_launch_stores_nothing():
    """Saves are admitted from a memo of tokens seen running, which does not hear of a stop: the
    save's own transaction refuses it, 409, and nothing is stored."""
    d = daemon().start()
    try:
        save = saved_once_then_stopped(d, "stopped")
        st, body = save("two")
        assert st == 409, (st, body)
        assert "the process should exit" in json.loads(body)["error"]["message"], body
        keys = [c["key"] for c in
                d.request("GET", "/api/v1/instances/stopped/checkpoints").json()["checkpoints"]]
        assert keys == ["one"], keys
    finally:
        d.cleanup()


@test
def a_save_with_the_token_of_a_deleted_instance_is_refused_as_unknown():
    """A save admitted from the memo of tokens whose instance retention has deleted since: 401, as
    the token check would have said, not the store's "does not exist"."""
    d = daemon(env={"RUNTARA_RETENTION_SECS": "1", "RUNTARA_RETENTION_INTERVAL_SECS": "1"}).start()
    try:
        save = saved_once_then_stopped(d, "gone")
        deadline = deadline_in(30)
        while d.request("GET", "/api/v1/instances/gone").status != 404:
            assert time.monotonic() < deadline, "retention did not delete the instance"
            time.sleep(0.1)
        st, body = save("two")
        assert st == 401, (st, body)
    finally:
        d.cleanup()


@test
def a_custom_signal_reaches_the_program_waiting_for_its_key():
    d = daemon().start()
    try:
        img = image(d, r'''touch "$OUT/waiting"
while :; do
    r=$(api "/signals?wait_key=approval&wait=5s")
    case "$r" in *'"custom"'*) break;; esac
done
again=$(api "/signals?wait_key=approval")
complete "{\"got\": $r, \"again\": $again}"
''')
        start_and_approve(d, img, "cs")
        done = wait(d, "cs")
        assert done["status"] == "completed", done
        got = done["output"]["got"]["signal"]
        assert got == {"type": "custom", "wait_key": "approval", "payload": {"by": "ada"}}, got
        assert done["output"]["again"] == {"signal": None}, "delivered once"
        r = d.request("POST", "/api/v1/instances/cs/signals/custom",
                      json_body={"wait_key": "approval"})
        assert r.status == 409, r
    finally:
        d.cleanup()


@test
def the_instance_api_also_listens_on_tcp_when_asked():
    port = harness.free_port()
    d = daemon(env={"RUNTARA_CORE_ADDR": f"127.0.0.1:{port}"}).start()
    try:
        img = image(d, SPY)
        out = scratch(d, "out")
        start(d, img, instance_id="tcp", env={"OUT": out})
        env = spied_env(out, 1)
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/api/v1/instances/tcp/input",
                  headers={"Authorization": f"Bearer {env['RUNTARA_INSTANCE_TOKEN']}"})
        r = c.getresponse()
        assert r.status == 200 and json.loads(r.read()) == {}, r.status
        c.request("GET", "/api/v1/instances/tcp/input")
        r = c.getresponse()
        assert r.status == 401, r.status
        r.read()
        c.close()
        d.request("POST", "/api/v1/instances/tcp/stop", json_body={"grace_secs": 0})
        wait(d, "tcp")
    finally:
        d.cleanup()


@test
def tenant_keys_cannot_touch_another_tenants_instances():
    d = daemon()
    keys = {}
    lines = []
    for name, role in (("ops", "admin"), ("acme", "tenant:acme"), ("beta", "tenant:beta")):
        k = "rtk_" + os.urandom(24).hex()
        keys[name] = k
        lines.append(f"{hashlib.sha256(k.encode()).hexdigest()} {role} {name}")
    path = os.path.join(d.tmp, "keys")
    open(path, "w").write("\n".join(lines) + "\n")
    d.env["RUNTARA_API_KEYS_FILE"] = path
    d.start()
    try:
        img = image(d, SPY, key=keys["acme"])
        out = scratch(d, "out")
        start(d, img, key=keys["acme"], instance_id="mine", env={"OUT": out})
        spied_env(out, 1)
        # beta cannot see, list, stop, signal, resume or read acme's instance: 404 everywhere
        for method, path, body in (("GET", "", None), ("POST", "/stop", {}),
                                   ("POST", "/signals", {"type": "cancel"}),
                                   ("POST", "/resume", None), ("GET", "/events", None),
                                   ("GET", "/checkpoints", None), ("GET", "/logs", None)):
            r = d.request(method, f"/api/v1/instances/mine{path}", key=keys["beta"],
                          json_body=body)
            assert r.status == 404, (method, path, r)
        assert d.request("GET", "/api/v1/instances", key=keys["beta"]).json()["total"] == 0
        # nor start acme's image
        r = d.request("POST", "/api/v1/instances", key=keys["beta"], json_body={"image_id": img})
        assert r.status == 404, r
        assert d.request("GET", "/api/v1/instances", key=keys["acme"]).json()["total"] == 1
        assert d.request("GET", "/api/v1/instances/mine", key=keys["ops"]).status == 200
        assert wait(d, "mine", key=keys["acme"], statuses=("running",))["status"] == "running"
        d.request("POST", "/api/v1/instances/mine/stop", key=keys["acme"],
                  json_body={"grace_secs": 0})
        assert wait(d, "mine", key=keys["acme"])["status"] == "cancelled"
    finally:
        d.cleanup()


@test
def bad_requests_get_clear_errors_and_change_nothing():
    d = daemon(env={"RUNTARA_MAX_CHECKPOINT_SIZE": "1K"}).start()
    try:
        img = image(d, SPY)
        cases = [
            ({"image_id": "0a7c3b0e-0000-4000-8000-000000000000"}, 404, "does not exist"),
            ({"image": "nope", "tenant_id": "acme"}, 404, "does not exist"),
            ({"image_id": img, "image": "wf"}, 400, "either image_id or image"),
            ({}, 400, "either image_id or image"),
            ({"image_id": img, "instance_id": "../x"}, 400, "instance_id"),
            ({"image_id": img, "instance_id": "x" * 300}, 400, "instance_id"),
            ({"image_id": img, "timeout_secs": 0}, 400, "timeout_secs"),
            ({"image_id": img, "env": {"RUNTARA_INSTANCE_ID": "other"}}, 400, "RUNTARA_"),
            ({"image_id": img, "env": {"A-B": "x"}}, 400, "env name"),
            ({"image_id": img, "env": {"A": 1}}, 400, "string"),
            ({"image_id": img, "colour": "red"}, 400, "unknown field \"colour\""),
            ({"image_id": img, "tenant_id": 5}, 400, "tenant_id must be a string"),
            ({"image_id": 5, "image": "wf", "tenant_id": "acme"}, 400, "image_id must be a string"),
        ]
        for body, status, needle in cases:
            r = d.request("POST", "/api/v1/instances", json_body=body)
            assert r.status == status, (body, r)
            assert needle in error_of(r)["message"], (body, error_of(r))
        r = d.request("POST", "/api/v1/instances", body=b'{"image_id": ',
                      headers={"Content-Type": "application/json"})
        assert r.status == 400 and error_of(r)["code"] == "invalid_json", r
        r = d.request("POST", "/api/v1/instances", body=b"image_id=x",
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status == 415, r
        r = d.request("POST", "/api/v1/instances?dry_run=1", json_body={"image_id": img})
        assert r.status == 400 and "dry_run" in error_of(r)["message"], r
        assert d.request("GET", "/api/v1/instances").json()["total"] == 0

        out = scratch(d, "out")
        start(d, img, instance_id="b1", env={"OUT": out})
        # idempotent: the same request again is 200 with the same instance; a different one 409
        again = start(d, img, expect=200, instance_id="b1", env={"OUT": out})
        assert again["instance_id"] == "b1"
        r = d.request("POST", "/api/v1/instances",
                      json_body={"image_id": img, "instance_id": "b1", "input": {"other": 1}})
        assert r.status == 409 and error_of(r)["code"] == "conflict", r
        env = spied_env(out, 1)
        core = UnixHTTP(host_socket(d, env["RUNTARA_SERVER_ADDR"]))
        tok = env["RUNTARA_INSTANCE_TOKEN"]
        st, _, body = core.request("PUT", "/api/v1/instances/b1/checkpoints/big", tok, b"x" * 2000,
                                   {"Content-Type": "application/octet-stream"})
        assert st == 413, body
        st, _, body = core.request("PUT", "/api/v1/instances/b1/checkpoints/bad%20key", tok, b"x")
        assert st == 400, body
        st, _, body = core.request("POST", "/api/v1/instances/b1/signals/ack", tok,
                                   b'{"type": "cancel"}', {"Content-Type": "application/json"})
        assert st == 409 and json.loads(body)["error"]["message"] == "no cancel signal is pending", \
            body
        bad_type = "invalid signal type: must be cancel, pause or resume"
        for raw in (b'{"type": "Pause"}', b'{"type": 1}', b'{"type": "none"}'):
            st, _, body = core.request("POST", "/api/v1/instances/b1/signals/ack", tok, raw,
                                       {"Content-Type": "application/json"})
            assert st == 400 and json.loads(body)["error"]["message"] == bad_type, (raw, body)
        for body, status in (({"type": "explode"}, 400), ({"type": "resume"}, 409),
                             ({"kind": "cancel"}, 400), ({"type": "CANCEL"}, 400),
                             ({"type": None}, 400)):
            r = d.request("POST", "/api/v1/instances/b1/signals", json_body=body)
            assert r.status == status, (body, r)
            if status == 400 and "type" in body:
                assert error_of(r)["message"] == bad_type, (body, r)
        r = d.request("POST", "/api/v1/instances/b1/resume")
        assert r.status == 409 and "running" in error_of(r)["message"], r
        for q in ("status=sleeping", "created_after=yesterday", "limit=0", "wait=forever"):
            r = d.request("GET", f"/api/v1/instances?{q}")
            assert r.status == 400, (q, r)
        for bad in ("sleeping", "Running", ""):
            r = d.request("GET", f"/api/v1/instances?status={bad}")
            assert r.status == 400 and error_of(r)["message"] == (
                f'invalid status "{bad}": must be pending, running, suspended, completed, '
                "failed or cancelled"), (bad, r)
        r = d.request("GET", "/api/v1/instances?status=running")
        assert r.status == 200 and [i["instance_id"] for i in r.json()["instances"]] == ["b1"], r
        r = d.request("GET", "/api/v1/instances/b1?wait=2h")
        assert r.status == 400, r
        inst = d.request("GET", "/api/v1/instances/b1").json()
        assert inst["status"] == "running" and inst["checkpoint_id"] is None, inst
        d.request("POST", "/api/v1/instances/b1/stop", json_body={"grace_secs": 0})
        wait(d, "b1")
    finally:
        d.cleanup()


@test
def the_mock_runner_drives_the_lifecycle_without_processes():
    d = daemon(env={"RUNTARA_RUNNER": "mock"}).start()
    try:
        img = image(d, "exit 99\n")  # never executed
        start(d, img, instance_id="m-ok", env={"MOCK_OUTPUT": '{"mocked": true}'})
        start(d, img, instance_id="m-bad", env={"MOCK_EXIT": "3"})
        start(d, img, instance_id="m-slow", env={"MOCK_DELAY_MS": "60000"})
        a = wait(d, "m-ok")
        assert (a["status"], a["output"]) == ("completed", {"mocked": True}), a
        b = wait(d, "m-bad")
        assert (b["status"], b["termination_reason"], b["exit_code"]) == ("failed", "crashed", 3)
        assert wait(d, "m-slow", statuses=("running",))["status"] == "running"
        d.request("POST", "/api/v1/instances/m-slow/stop", json_body={"grace_secs": 5})
        c = wait(d, "m-slow")
        assert (c["status"], c["termination_reason"], c["exit_code"]) == \
            ("cancelled", "stopped", 143), c
        d.wait_log("instances are not executed")
    finally:
        d.cleanup()


@test
def a_long_poll_still_answering_at_shutdown_ends_cleanly():
    """A status long-poll resumed at shutdown may end only while its server stops: an 8 MB answer
    to a client that does not read it. Its end reports to the waiters' registry, which must
    outlive the server (it was freed first, and the daemon hung or used freed memory)."""
    import socket

    d = daemon(env={"RUNTARA_RUNNER": "mock", "RUNTARA_MAX_JSON_BODY": "16M"}).start()
    try:
        img = image(d, "exit 99\n")  # never executed
        start(d, img, instance_id="big", input={"blob": "x" * (8 << 20)},
              env={"MOCK_DELAY_MS": "60000"})
        assert wait(d, "big", statuses=("running",))["status"] == "running"
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", d.port))
        c.sendall(b"GET /api/v1/instances/big?wait=30s HTTP/1.1\r\nHost: t\r\n\r\n")
        deadline = deadline_in(10)
        while "runtara_long_polls_waiting 1\n" not in d.request("GET", "/metrics").body.decode():
            assert time.monotonic() < deadline, "the long poll was not parked"
            time.sleep(0.01)
        assert d.stop() == 0  # at once: no grace (the harness's default); checks sanitizers
        c.close()
    finally:
        d.cleanup()


def doc_slot(iid):
    """The slot of the daemon's per-thread status-document table (hashmap_hash: FNV-1a, 64 bit,
    of the id, mod 64)."""
    h = 1469598103934665603  # the offset basis src/base/hashmap.c uses
    for c in iid.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h % 64


@test
def status_documents_follow_every_change_of_the_row():
    """GET status remembers the documents it built (src/api/handlers-instances.c); every answer
    must still be the row as it is now: after changes of status, of output, and with two
    instances sharing one slot of the table, read alternately on one connection (one thread)."""
    d = daemon(env={"RUNTARA_RUNNER": "mock", "RUNTARA_HTTP_THREADS": "1"}).start()
    try:
        img = image(d, "exit 99\n")
        a = "doc-a"
        b = next(f"doc-b{i}" for i in range(10000) if doc_slot(f"doc-b{i}") == doc_slot(a))
        start(d, img, instance_id=a, env={"MOCK_DELAY_MS": "60000"})
        start(d, img, instance_id=b, env={"MOCK_OUTPUT": '{"n": 2}'})
        assert wait(d, a, statuses=("running",))["status"] == "running"
        assert wait(d, b)["output"] == {"n": 2}
        for _ in range(3):
            ra, rb = d.request("GET", f"/api/v1/instances/{a}").json(), \
                d.request("GET", f"/api/v1/instances/{b}").json()
            assert (ra["instance_id"], ra["status"]) == (a, "running"), ra
            assert (rb["instance_id"], rb["status"], rb["output"]) == (b, "completed", {"n": 2})
        d.request("POST", f"/api/v1/instances/{a}/stop", json_body={"grace_secs": 5})
        ra = wait(d, a)
        assert (ra["status"], ra["termination_reason"]) == ("cancelled", "stopped"), ra
        again = d.request("GET", f"/api/v1/instances/{a}").json()
        assert again == ra and again["finished_at"], again
        # resumed: the same id, a new run; the remembered "cancelled" document must not come back
        assert d.request("POST", f"/api/v1/instances/{a}/resume", json_body={}).status == 202
        r = d.request("GET", f"/api/v1/instances/{a}").json()
        assert r["status"] in ("pending", "running") and r["finished_at"] is None, r
    finally:
        d.cleanup()


@test
def an_event_poll_waits_for_the_next_event_and_answers_when_it_comes():
    """GET .../events?cursor=LAST&wait=: nothing after LAST yet, so the request waits, and it is
    answered as soon as the program records its next checkpoint; a wait with nothing new ends
    with an empty page."""
    d = daemon().start()
    try:
        out = scratch(d, "follow")
        img = image(d, 'step 1 >/dev/null\nwhile [ ! -e "$OUT/go" ]; do sleep 0.01; done\n'
                       'step 2 >/dev/null\ncomplete \'"done"\'\n')
        start(d, img, instance_id="follow", env={"OUT": out})
        deadline = deadline_in(20)
        while "checkpoint" not in events(d, "follow"):
            assert time.monotonic() < deadline, events(d, "follow")
            time.sleep(0.02)
        seen = d.request("GET", "/api/v1/instances/follow/events").json()["events"]
        last = seen[-1]["id"]
        # nothing new within the wait: an empty page, after the wait
        t0 = time.monotonic()
        r = d.request("GET", f"/api/v1/instances/follow/events?cursor={last}&wait=300ms")
        assert r.status == 200 and r.json() == {"events": [], "next_cursor": None}, r
        assert time.monotonic() - t0 >= 0.3, time.monotonic() - t0
        # a poll parked for up to 60 s is answered by the next checkpoint
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            t0 = time.monotonic()
            poll = ex.submit(d.request, "GET",
                             f"/api/v1/instances/follow/events?cursor={last}&wait=60s")
            time.sleep(0.3)
            assert not poll.done(), poll.result()
            open(os.path.join(out, "go"), "w").close()
            r = poll.result(timeout=30 * harness.time_scale())
        assert r.status == 200, r
        got = r.json()["events"]
        assert got and got[0]["id"] > last, got
        assert (got[0]["type"], got[0]["subtype"]) == ("checkpoint", "step2"), got
        assert time.monotonic() - t0 < 30, time.monotonic() - t0
        assert wait(d, "follow")["status"] == "completed"
        r = d.request("GET", "/api/v1/instances/follow/events?wait=2h")
        assert r.status == 400 and "wait" in error_of(r)["message"], r
    finally:
        d.cleanup()


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


@test
def tenant_metrics_count_what_ended_per_hour_for_its_tenant_only():
    """GET /api/v1/tenants/{tenant}/metrics: one bucket per hour (or day) of the range, the empty
    ones included; each counts the tenant's instances that ended in it, by how they ended, with
    their durations, peak memory and success rate. A tenant key sees its own tenant only."""
    env = {"RUNTARA_OCI_MOUNTS": "/usr,/bin,/lib,/lib64"} if RUNNER == "oci" else {}
    d, keys = harness.keyed_daemon(env)
    try:
        ops = keys["ops"]
        t0 = time.time()
        imgs = {"ok": image(d, 'complete \'{"ok": true}\'\n', key=ops),
                "bad": image(d, "exit 3\n", key=ops, name="bad"),
                "slow": image(d, "sleep 60\n", key=ops, name="slow"),
                "beta": image(d, "complete '{}'\n", tenant="beta", key=ops)}
        for name, img in imgs.items():
            start(d, img, key=ops, instance_id=f"m-{name}")
        assert d.request("POST", "/api/v1/instances/m-slow/stop", json_body={"grace_secs": 0},
                         key=ops).status == 202
        for name in imgs:
            wait(d, f"m-{name}", key=ops, statuses=("completed", "failed", "cancelled"))
            wait_exit_recorded(d, f"m-{name}", key=ops)
        t_end = int(time.time() + 60)
        start_at, end_at = rfc3339(t0 - 2 * 3600), rfc3339(t_end)
        q = f"start={start_at}&end={end_at}"

        def metrics(tenant, key, query=q, expect=200):
            r = d.request("GET", f"/api/v1/tenants/{tenant}/metrics?{query}", key=key)
            assert r.status == expect, r
            return r.json()

        m = metrics("acme", keys["acme"])
        assert (m["tenant_id"], m["granularity"]) == ("acme", "hour"), m
        assert m["start"].startswith(start_at[:-1]) and m["end"].startswith(end_at[:-1]), m
        b = m["buckets"]
        # the hours from the one holding start to the one holding end
        first = int(t0 - 2 * 3600) // 3600 * 3600
        assert len(b) == (t_end // 3600 * 3600 - first) // 3600 + 1, b
        assert [x["time"] for x in b] == [rfc3339(first + 3600 * i).replace("Z", ".000Z")
                                          for i in range(len(b))], b
        # two hours before the runs: empty, and its averages absent rather than zero
        assert b[0] == {"time": b[0]["time"], "invocation_count": 0, "success_count": 0,
                        "failure_count": 0, "cancelled_count": 0, "avg_duration_ms": None,
                        "min_duration_ms": None, "max_duration_ms": None,
                        "avg_memory_bytes": None, "max_memory_bytes": None,
                        "success_rate_percent": None}, b[0]
        total = {k: sum(x[k] for x in b) for k in ("invocation_count", "success_count",
                                                   "failure_count", "cancelled_count")}
        assert total == {"invocation_count": 3, "success_count": 1, "failure_count": 1,
                         "cancelled_count": 1}, b
        for x in b:
            if x["invocation_count"]:
                assert 0 <= x["min_duration_ms"] <= x["avg_duration_ms"] <= x["max_duration_ms"]
                assert x["max_duration_ms"] < 60_000, x  # the slow one was stopped at once
                assert x["max_memory_bytes"] >= x["avg_memory_bytes"] > 0, x
                rate = 100 * x["success_count"] / x["invocation_count"]
                assert abs(x["success_rate_percent"] - rate) < 1e-9, x
        busy = [x for x in b if x["invocation_count"]]
        if len(busy) == 1:  # (unless the runs straddled the hour)
            assert round(busy[0]["success_rate_percent"], 2) == 33.33, busy

        # by day, and for the other tenant
        days = metrics("acme", ops, f"start={rfc3339(t0 - 60)}&end={end_at}&granularity=day")
        assert sum(x["invocation_count"] for x in days["buckets"]) == 3, days
        assert len(days["buckets"]) in (1, 2), days
        beta = metrics("beta", keys["beta"])
        assert sum(x["success_count"] for x in beta["buckets"]) == 1, beta
        assert sum(x["invocation_count"] for x in metrics("nobody", ops)["buckets"]) == 0

        # a tenant key is refused another tenant's metrics
        r = d.request("GET", "/api/v1/tenants/beta/metrics", key=keys["acme"])
        assert r.status == 403 and error_of(r)["code"] == "forbidden", r
        assert d.request("GET", "/api/v1/tenants/acme/metrics").status == 401

        # bad input names what is wrong
        for query, words in (
                ("granularity=week", "invalid granularity \"week\": expected hour or day"),
                ("start=yesterday", "invalid start \"yesterday\""),
                (f"start={end_at}&end={start_at}", "start must come before end"),
                ("start=2020-01-01T00:00:00Z", "more than the 13200 a request may ask for"),
                ("limit=5", "limit")):
            r = d.request("GET", f"/api/v1/tenants/acme/metrics?{query}", key=ops)
            assert r.status == 400 and error_of(r)["code"] == "invalid_argument", (query, r)
            assert words in error_of(r)["message"], (query, r)
        r = d.request("GET", "/api/v1/tenants/no%20such/metrics", key=ops)
        assert r.status == 400, r
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
