#!/usr/bin/env python3
"""Isolation and containment (issue #17): who may run native programs, that a program never
outlives its supervisor, and that a launch's token is out of reach of other programs."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (Daemon, deadline_in, error_of, keyed_daemon, main, test,  # noqa: E402
                     time_scale)


def upload(d, script, key=None, runner="native", name="wf"):
    extra = f"&runner_type={runner}" if runner else ""
    return d.upload("acme", name, script.encode(), key=key, extra=extra)


def start(d, img, iid, key=None, env=None):
    return d.request("POST", "/api/v1/instances", key=key,
                     json_body={"image_id": img, "instance_id": iid, "env": env or {}})


def settle(d, iid, statuses=("completed", "failed", "cancelled", "suspended"), timeout=30,
           key=None):
    deadline = deadline_in(timeout)
    # ?wait= holds a request while the instance is pending or running: not to wait for those
    live = "running" in statuses or "pending" in statuses
    while True:
        inst = d.request("GET", f"/api/v1/instances/{iid}" + ("" if live else "?wait=5s"),
                         key=key).json()
        if inst["status"] in statuses:
            return inst
        assert time.monotonic() < deadline, f"{iid} did not settle: {inst}"
        if live:
            time.sleep(0.02)


def wait_file(path, timeout=20, msg=""):
    deadline = deadline_in(timeout)
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} did not appear\n{msg}"
        time.sleep(0.02)


def alive(pid):
    """Whether pid still runs (a zombie does not: it runs nothing)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read)
        return False


def ppid_of(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@test
def native_images_need_an_operator_setting():
    # unset: tenant keys may neither register nor start native images; admin keys may
    d, keys = keyed_daemon(env={"RUNTARA_NATIVE_TENANTS": None})
    try:
        r = upload(d, "#!/bin/sh\nexit 0\n", key=keys["acme"])
        assert r.status == 403, r
        assert "may not run native images" in error_of(r)["message"], r
        assert "RUNTARA_NATIVE_TENANTS" in error_of(r)["message"], r
        # the default runner of the daemon (native, in these tests) counts as asking for native
        r = upload(d, "#!/bin/sh\nexit 0\n", key=keys["acme"], runner=None)
        assert r.status == 403, r
        r = upload(d, "#!/bin/sh\nexit 0\n", key=keys["ops"])
        assert r.status == 201, r
        img = r.json()["image_id"]
        r = start(d, img, "by-tenant", key=keys["acme"])
        assert r.status == 403 and "may not run native images" in error_of(r)["message"], r
        assert d.request("GET", "/api/v1/instances/by-tenant", key=keys["ops"]).status == 404
        r = start(d, img, "by-admin", key=keys["ops"])
        assert r.status == 201, r
        assert settle(d, "by-admin", key=keys["ops"])["status"] == "completed"
    finally:
        d.stop()
        d.cleanup()
    # named: that tenant's keys may
    d, keys = keyed_daemon(env={"RUNTARA_NATIVE_TENANTS": "beta,acme"})
    try:
        r = upload(d, "#!/bin/sh\nexit 0\n", key=keys["acme"])
        assert r.status == 201, r
        r = start(d, r.json()["image_id"], "mine", key=keys["acme"])
        assert r.status == 201, r
    finally:
        d.stop()
        d.cleanup()


# Starts a helper in its own process group's background (it stays in the group), records both
# pids, then waits. Run again (a resume), it records the pids of that launch.
FAMILY = r"""#!/bin/sh
sleep 300 &
echo "$$ $!" > "$OUT/pids.$RUNTARA_ATTEMPT.tmp"
mv "$OUT/pids.$RUNTARA_ATTEMPT.tmp" "$OUT/pids.$RUNTARA_ATTEMPT"
wait
"""


@test
def a_killed_shim_takes_its_program_with_it():
    d = Daemon().start()
    try:
        out = os.path.join(d.tmp, "out")
        os.makedirs(out)
        r = upload(d, FAMILY)
        assert r.status == 201, r
        img = r.json()["image_id"]
        assert start(d, img, "fam", env={"OUT": out}).status == 201
        wait_file(os.path.join(out, "pids.1"))
        prog, helper = map(int, open(os.path.join(out, "pids.1")).read().split())
        shim = ppid_of(prog)
        assert "runtara-shim" in open(f"/proc/{shim}/cmdline").read()
        os.kill(shim, signal.SIGKILL)
        inst = settle(d, "fam")
        # by the time the end is recorded, nothing of the launch runs
        assert not alive(prog) and not alive(helper), (prog, helper)
        assert (inst["status"], inst["termination_reason"]) == ("failed", "crashed"), inst
        # a resume runs the program again: one launch at a time
        assert d.request("POST", "/api/v1/instances/fam/resume").status == 202
        wait_file(os.path.join(out, "pids.2"))
        prog2, helper2 = map(int, open(os.path.join(out, "pids.2")).read().split())
        assert alive(prog2) and alive(helper2)
        assert not alive(prog) and not alive(helper)
        assert d.request("POST", "/api/v1/instances/fam/stop",
                         json_body={"grace_secs": 0}).status == 202
        assert settle(d, "fam")["status"] == "cancelled"
    finally:
        d.stop()
        d.cleanup()


@test
def a_killed_shim_found_at_start_up_takes_its_program_with_it():
    d = Daemon().start()
    try:
        out = os.path.join(d.tmp, "out")
        os.makedirs(out)
        img = upload(d, FAMILY).json()["image_id"]
        assert start(d, img, "fam", env={"OUT": out}).status == 201
        wait_file(os.path.join(out, "pids.1"))
        prog, helper = map(int, open(os.path.join(out, "pids.1")).read().split())
        shim = ppid_of(prog)
        settle(d, "fam", statuses=("running",))  # its launch is recorded
        d.kill9()
        # the shim dies while no daemon watches; its program dies with it (parent-death
        # signal), and what was left of the group is killed by the next start
        os.kill(shim, signal.SIGKILL)
        d.start()
        deadline = deadline_in(20)
        while alive(helper) or alive(prog):
            assert time.monotonic() < deadline, "the launch's processes outlived the restart"
            time.sleep(0.05)
        # relaunched from its checkpoints (it died unseen, like with the machine)
        wait_file(os.path.join(out, "pids.2"), msg=d.logs()[-3000:])
        inst = settle(d, "fam", statuses=("running",))
        assert inst["attempt"] == 2, inst
    finally:
        d.stop()
        d.cleanup()


# Looks for launch tokens where another program of the same user could read them: the
# environments of the daemon and of every process under it (shims, programs, containers; not
# other tests' processes on the machine), and the files of the data directory.
SNOOP = r"""#!/usr/bin/env python3
import json, os
def ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError):
        return 0
def under(pid, top):
    while pid > 1:
        if pid == top:
            return True
        pid = ppid(pid)
    return False
top = int(os.environ["DAEMON_PID"])
found, looked = [], 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    if not under(int(pid), top):
        continue
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
        looked += 1
    except OSError:
        continue
    found += [e.decode(errors="replace") for e in env if e.startswith(b"RUNTARA_INSTANCE_TOKEN=")]
json.dump({"found": found, "looked": looked},
          open(os.path.join(os.environ["OUT"], "snoop.json"), "w"))
"""

# Holds its token (read from its pipe) and waits.
HOLDER = r"""#!/bin/sh
RUNTARA_INSTANCE_TOKEN=$(cat <&4)
echo "$RUNTARA_INSTANCE_TOKEN" > /dev/null
touch "$OUT/holding"
exec sleep 300
"""


@test
def a_native_program_finds_no_other_launch_token():
    d = Daemon().start()
    try:
        out = os.path.join(d.tmp, "out")
        os.makedirs(out)
        holder = upload(d, HOLDER, name="holder").json()["image_id"]
        snoop = upload(d, SNOOP, name="snoop").json()["image_id"]
        assert start(d, holder, "victim", env={"OUT": out}).status == 201
        wait_file(os.path.join(out, "holding"))
        # and a container's program, holding its token (read from its pipe)
        boxed = upload_file(d, WORKFLOW_STATIC, name="boxed")
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": boxed, "instance_id": "boxed",
            "input": {"name": "b", "steps": 1000, "step_ms": 100}})
        assert r.status == 201, r
        settle(d, "boxed", statuses=("running",))
        assert start(d, snoop, "snoop",
                     env={"OUT": out, "DAEMON_PID": str(d.proc.pid)}).status == 201
        assert settle(d, "snoop")["status"] == "completed"
        seen = json.load(open(os.path.join(out, "snoop.json")))
        # the daemon, the shims, the victim's program, the container's, the snoop's own: all
        # read, none with a token
        assert seen["looked"] >= 6 and seen["found"] == [], seen
        # nor is a token in any file of the data directory (the store keeps hashes)
        for root, _, files in os.walk(d.data_dir):
            if root.startswith(os.path.join(d.data_dir, "images")):
                continue  # (the snoop's own program names the variable)
            for f in files:
                if not os.path.isfile(os.path.join(root, f)):
                    continue  # (the sockets)
                data = open(os.path.join(root, f), "rb").read()
                assert b"RUNTARA_INSTANCE_TOKEN=" not in data, os.path.join(root, f)
    finally:
        d.stop()
        d.cleanup()


WORKFLOW_STATIC = os.environ.get("RUNTARA_SDK_WORKFLOW_STATIC")
PROBE = os.environ.get("RUNTARA_ISOLATION_PROBE")


def oci_containers(d):
    """The containers in the daemon's runtime state directory."""
    out = subprocess.run(["crun", "--root", os.path.join(d.data_dir, "oci", "state"), "list",
                          "--quiet"], capture_output=True, text=True, check=True).stdout
    return out.split()


def the_container(d, iid):
    """The id of the one container of the daemon, once the shim has created it: running is
    recorded by the program's first call, or by the daemon 50 ms after the hand-over
    (RUNTARA_LAUNCH_RECORD_MS), which on a loaded machine can come before the container."""
    deadline = deadline_in(30)
    while not oci_containers(d):
        assert time.monotonic() < deadline, f"no container for instance {iid}"
        time.sleep(0.05)
    [cid] = oci_containers(d)
    return cid


def exit_event(d, iid):
    """The payload of the instance's "exited" event, once its exit is recorded."""
    deadline = deadline_in(20)
    while True:
        events = d.request("GET", f"/api/v1/instances/{iid}/events").json()["events"]
        exited = [e["payload"] for e in events if e["type"] == "exited"]
        if exited:
            return exited[0]
        assert time.monotonic() < deadline, events
        time.sleep(0.02)


def upload_file(d, path, runner="oci", name="wf"):
    r = d.upload("acme", name, open(path, "rb").read(), extra=f"&runner_type={runner}")
    assert r.status == 201, r
    return r.json()["image_id"]


@test
def an_oci_image_runs_in_a_container():
    d = Daemon().start()
    try:
        assert "oci runner: crun runs containers here" in d.logs(), d.logs()[-2000:]
        img = upload_file(d, WORKFLOW_STATIC)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "c1", "input": {"name": "box", "steps": 3}})
        assert r.status == 201, r
        inst = settle(d, "c1")
        assert (inst["status"], inst["output"]["greeting"]) == ("completed", "hello box"), inst
        exited = exit_event(d, "c1")
        assert exited["memory_peak_bytes"] > 0 and not exited["oom"], exited
        # and in its status: the cgroup's peak memory and CPU time, read before the delete
        inst = d.request("GET", "/api/v1/instances/c1").json()
        assert inst["memory_peak_bytes"] == exited["memory_peak_bytes"] > 0, inst
        assert inst["cpu_usec"] == exited["cpu_usec"] > 0, inst
        # nothing is left of the launch: no container, no per-launch bundle
        assert oci_containers(d) == []
        assert os.listdir(os.path.join(d.data_dir, "oci", "launches")) == []
        # one read-only root file system per image, holding its program alone
        rootfs = os.path.join(d.data_dir, "bundles", img, "rootfs")
        files = [os.path.relpath(os.path.join(r, f), rootfs) for r, _, fs in os.walk(rootfs)
                 for f in fs]
        assert sorted(files) == ["binary", "etc/hosts", "etc/resolv.conf"], files
        assert os.path.getsize(os.path.join(rootfs, "etc/hosts")) == 0
        # gone with its image
        assert d.request("DELETE", f"/api/v1/images/{img}").status == 204
        assert not os.path.exists(os.path.join(d.data_dir, "bundles", img))
        # the containers' parent cgroup (/runtara/<tag of the state directory>) is there until the
        # daemon stops, and not after
        state = os.path.join(d.data_dir, "oci", "state")
        parent = "/sys/fs/cgroup/memory/runtara/" + hashlib.sha256(state.encode()).hexdigest()[:8]
        assert os.path.isdir(parent), parent
        d.stop()
        assert not os.path.exists(parent), parent
    finally:
        d.stop()
        d.cleanup()


@test
def an_oci_instance_pauses_resumes_stops_and_times_out():
    d = Daemon().start()
    try:
        img = upload_file(d, WORKFLOW_STATIC)

        def launch(iid, **extra):
            body = {"image_id": img, "instance_id": iid,
                    "input": {"name": iid, "steps": 100, "step_ms": 50}}
            body.update(extra)
            r = d.request("POST", "/api/v1/instances", json_body=body)
            assert r.status == 201, r
            return settle(d, iid, statuses=("running",))

        # pause at a checkpoint, resume in a new container that replays the steps done
        launch("p")
        deadline = deadline_in(20)
        while d.request("GET", "/api/v1/instances/p").json()["checkpoint_id"] is None:
            assert time.monotonic() < deadline, "no step done"
            time.sleep(0.01)
        assert d.request("POST", "/api/v1/instances/p/signals",
                         json_body={"type": "pause"}).status == 202
        inst = settle(d, "p")
        assert (inst["status"], inst["termination_reason"]) == ("suspended", "paused"), inst
        assert d.request("POST", "/api/v1/instances/p/resume").status == 202
        inst = settle(d, "p", statuses=("completed", "failed"), timeout=60)
        assert inst["status"] == "completed" and inst["attempt"] == 2, inst
        assert 1 in inst["output"]["attempts"] and 2 in inst["output"]["attempts"], inst
        # an operator stop: SIGTERM (the program has no handler: the shim makes it a SIGKILL)
        launch("s")
        assert d.request("POST", "/api/v1/instances/s/stop",
                         json_body={"grace_secs": 5}).status == 202
        inst = settle(d, "s")
        assert (inst["status"], inst["termination_reason"]) == ("cancelled", "stopped"), inst
        # its timeout
        launch("t", timeout_secs=1)
        inst = settle(d, "t")
        assert (inst["status"], inst["termination_reason"]) == ("failed", "timeout"), inst
        deadline = deadline_in(20)
        while oci_containers(d):
            assert time.monotonic() < deadline, oci_containers(d)
            time.sleep(0.05)
    finally:
        d.stop()
        d.cleanup()


@test
def an_oci_instance_cancels_logs_and_reports_its_exit():
    d = Daemon().start()
    try:
        img = upload_file(d, WORKFLOW_STATIC)
        body = {"image_id": img, "instance_id": "c",
                "input": {"name": "c", "steps": 200, "step_ms": 50}}
        assert d.request("POST", "/api/v1/instances", json_body=body).status == 201
        assert d.request("POST", "/api/v1/instances", json_body=body).status == 200  # idempotent
        settle(d, "c", statuses=("running",))
        # a cancel signal, acted on by the program at its next step
        assert d.request("POST", "/api/v1/instances/c/signals",
                         json_body={"type": "cancel"}).status == 202
        inst = settle(d, "c")
        assert (inst["status"], inst["termination_reason"]) == ("cancelled", "cancelled"), inst
        exit_event(d, "c")
        # what the program wrote in its container, through the API
        logs = d.request("GET", "/api/v1/instances/c/logs").body.decode()
        assert "cancel requested, stopping" in logs, logs
        types = [e["type"] for e in d.request("GET", "/api/v1/instances/c/events").json()["events"]]
        assert types[:2] == ["started", "registered"] and "exited" in types, types
        # a program that fails without a report: crashed, with its exit code
        probe = upload_file(d, PROBE, name="probe")
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": probe, "instance_id": "bad", "input": {"try": "no-such-attempt"}})
        assert r.status == 201, r
        inst = settle(d, "bad")
        assert (inst["status"], inst["termination_reason"], inst["exit_code"]) == \
            ("failed", "crashed", 2), inst
        assert "process exited with status 2" in inst["error"], inst
    finally:
        d.stop()
        d.cleanup()


@test
def an_oci_program_cannot_read_the_host():
    d = Daemon().start()
    try:
        img = upload_file(d, PROBE)
        for what in ("read-host-file", "write-rootfs", "list-processes", "supervisor-files"):
            r = d.request("POST", "/api/v1/instances", json_body={
                "image_id": img, "instance_id": what, "input": {"try": what}})
            assert r.status == 201, r
            inst = settle(d, what)
            assert inst["status"] == "completed", inst
            assert inst["output"]["try"] == what and inst["output"]["escaped"] is False, inst
            if what == "supervisor-files":
                # refused by the sticky bit (EPERM), in a directory it may add files to
                for a in inst["output"]["attempts"]:
                    assert a["errors"].startswith("Operation not permitted"), inst
    finally:
        d.stop()
        d.cleanup()


@test
def an_oci_program_reaches_neither_the_network_nor_other_instances():
    d = Daemon(env={"RUNTARA_OCI_PIDS_MAX": "16"}).start()
    try:
        probe = upload_file(d, PROBE)
        wf = upload_file(d, WORKFLOW_STATIC, name="wf")
        # another tenant's instance, running, with its token in its container's environment
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": wf, "instance_id": "victim",
            "input": {"name": "v", "steps": 1000, "step_ms": 100}})
        assert r.status == 201, r
        settle(d, "victim", statuses=("running",))
        tries = {"connect-loopback": {"port": d.port},  # the management API, on the host
                 "read-token": {},
                 "list-processes": {},
                 "pids": {"limit": 16}}
        for what, extra in tries.items():
            r = d.request("POST", "/api/v1/instances", json_body={
                "image_id": probe, "instance_id": what, "input": dict(extra, **{"try": what})})
            assert r.status == 201, r
            inst = settle(d, what)
            assert inst["status"] == "completed", inst
            assert inst["output"]["escaped"] is False, inst
        # the pids limit stopped the forks short of it
        assert d.request("GET", "/api/v1/instances/pids").json()["output"]["count"] < 16
    finally:
        d.stop()
        d.cleanup()


@test
def containers_left_by_a_machine_crash_are_removed_at_start_up():
    d = Daemon().start()
    try:
        img = upload_file(d, WORKFLOW_STATIC)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "lost",
            "input": {"name": "x", "steps": 1000, "step_ms": 100}})
        assert r.status == 201, r
        settle(d, "lost", statuses=("running",))
        cid = the_container(d, "lost")
        state = json.loads(subprocess.run(
            ["crun", "--root", os.path.join(d.data_dir, "oci", "state"), "state", cid],
            capture_output=True, text=True, check=True).stdout)
        # a power loss: daemon, shim and container die at once, and the next boot is another
        d.kill9()
        shim = ppid_of(state["pid"])
        os.kill(shim, signal.SIGKILL)
        os.kill(state["pid"], signal.SIGKILL)
        lock = os.path.join(d.data_dir, "tenants", "acme", "runs", "lost", "shim.lock")
        attempt, what = open(lock).read().splitlines()[:2]
        with open(lock, "w") as f:
            f.write(f"{attempt}\n{what.split()[0]} another-boot\n")
        deadline = deadline_in(10)
        while alive(state["pid"]):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert oci_containers(d) == [cid]  # the runtime still lists it, stopped
        d.start()
        d.wait_log("removed 1 containers left by a crash")
        inst = settle(d, "lost", statuses=("running",))
        assert inst["attempt"] == 2, inst  # relaunched from its checkpoints
        assert cid not in oci_containers(d)
    finally:
        d.stop()
        d.cleanup()


@test
def two_daemons_containers_of_one_instance_key_stay_apart():
    a, b = Daemon().start(), Daemon().start()
    try:
        for d in (a, b):
            img = upload_file(d, WORKFLOW_STATIC)
            r = d.request("POST", "/api/v1/instances", json_body={
                "image_id": img, "instance_id": "twin",
                "input": {"name": "t", "steps": 1000, "step_ms": 100}})
            assert r.status == 201, r
            settle(d, "twin", statuses=("running",))
        # the same container id in both state directories, never the same cgroup
        assert the_container(a, "twin") == the_container(b, "twin")
        assert a.request("POST", "/api/v1/instances/twin/stop",
                         json_body={"grace_secs": 0}).status == 202
        assert settle(a, "twin")["status"] == "cancelled"
        time.sleep(0.5 * time_scale())
        inst = b.request("GET", "/api/v1/instances/twin").json()
        assert inst["status"] == "running", inst
        assert len(oci_containers(b)) == 1
    finally:
        for d in (a, b):
            d.stop()
            d.cleanup()


@test
def runc_runs_them_too():
    d = Daemon(env={"RUNTARA_OCI_RUNTIME": "runc"}).start()
    try:
        assert "oci runner: runc runs containers here" in d.logs(), d.logs()[-2000:]
        img = upload_file(d, WORKFLOW_STATIC)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "r1", "input": {"name": "runc"}})
        assert r.status == 201, r
        inst = settle(d, "r1")
        assert (inst["status"], inst["output"]["greeting"]) == ("completed", "hello runc"), inst
        probe = upload_file(d, PROBE, name="probe")
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": probe, "instance_id": "p1", "input": {"try": "read-host-file"}})
        assert r.status == 201, r
        assert settle(d, "p1")["output"]["escaped"] is False
    finally:
        d.stop()
        d.cleanup()


@test
def operator_mounts_never_show_the_daemons_files():
    """A RUNTARA_OCI_MOUNTS entry that would show the data directory, or that lands on what the
    container's spec mounts, stops the daemon at start, naming it. (Mounts at work: the lifecycle
    suite's shell programs, test_instances_oci.)"""
    for bad, says in ((None, "would show the daemon's"), ("/usr:/data", "the container's own")):
        d = Daemon()
        bad = bad or d.tmp  # it holds the data directory
        d.env["RUNTARA_OCI_MOUNTS"] = bad
        d.start(wait=False)
        try:
            assert d.proc.wait(20 * time_scale()) == 1
            assert f'invalid RUNTARA_OCI_MOUNTS entry \\"{bad}\\"' in d.logs(), d.logs()
            assert says in d.logs(), d.logs()
        finally:
            d.cleanup()


@test
def the_seccomp_filter_refuses_calls_under_crun_and_runc():
    """crun loads the filter the daemon compiled once (run.oci.seccomp_bpf_data), runc compiles
    the config's JSON form: the same answer, ENOSYS, which the kernel alone would not give."""
    for runtime in ("crun", "runc"):
        d = Daemon(env={"RUNTARA_OCI_RUNTIME": runtime}).start()
        try:
            probe = upload_file(d, PROBE, name="probe")
            r = d.request("POST", "/api/v1/instances", json_body={
                "image_id": probe, "instance_id": "sc", "input": {"try": "syscalls"}})
            assert r.status == 201, r
            inst = settle(d, "sc")
            assert inst["status"] == "completed" and inst["output"]["escaped"] is False, inst
            errs = inst["output"]["errno"]
            assert set(errs) == {"unshare", "clone", "socket", "ptrace", "keyctl"}, inst
            assert all(v == "ENOSYS" for v in errs.values()), (runtime, errs)
        finally:
            d.stop()
            d.cleanup()


@test
def an_oci_memory_limit_ends_in_an_oom_kill():
    d = Daemon(env={"RUNTARA_OCI_MEMORY_BYTES": "32M"}).start()
    try:
        img = upload_file(d, PROBE)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "hog", "input": {"try": "memory", "mib": 256}})
        assert r.status == 201, r
        inst = settle(d, "hog")
        assert (inst["status"], inst["termination_reason"]) == ("failed", "oom"), inst
        assert "out of memory" in inst["error"], inst
        assert exit_event(d, "hog")["oom"] is True
    finally:
        d.stop()
        d.cleanup()


@test
def a_killed_shim_takes_its_container_with_it():
    d = Daemon().start()
    try:
        img = upload_file(d, WORKFLOW_STATIC)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "long",
            "input": {"name": "x", "steps": 1000, "step_ms": 100}})
        assert r.status == 201, r
        settle(d, "long", statuses=("running",))
        cid = the_container(d, "long")
        state = json.loads(subprocess.run(
            ["crun", "--root", os.path.join(d.data_dir, "oci", "state"), "state", cid],
            capture_output=True, text=True, check=True).stdout)
        shim = ppid_of(state["pid"])  # the container's init is the shim's (a subreaper's) child
        assert "runtara-shim" in open(f"/proc/{shim}/cmdline").read()
        os.kill(shim, signal.SIGKILL)
        inst = settle(d, "long")
        assert (inst["status"], inst["termination_reason"]) == ("failed", "crashed"), inst
        # the end was recorded only once the container was gone
        assert oci_containers(d) == []
        # a prompt resume: one launch, one container, never two
        assert d.request("POST", "/api/v1/instances/long/resume").status == 202
        inst = settle(d, "long", statuses=("running",))
        assert inst["attempt"] == 2, inst
        assert len(oci_containers(d)) == 1
        assert d.request("POST", "/api/v1/instances/long/stop",
                         json_body={"grace_secs": 0}).status == 202
        settle(d, "long")
        assert oci_containers(d) == []
    finally:
        d.stop()
        d.cleanup()


if __name__ == "__main__":
    main()
