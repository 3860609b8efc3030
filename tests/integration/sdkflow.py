"""Helpers for the tests that run the SDK example workflow (examples/sdk-workflow) under the
real daemon: test_recovery.py and test_durable_time.py."""
import os
import signal
import time

from harness import BUILD, deadline_in

WORKFLOW = os.environ.get("RUNTARA_SDK_WORKFLOW", os.path.join(BUILD, "src/sdk/sdk-workflow"))
# RUNTARA_TEST_RUNNER=oci: the suites' SDK workflow runs in containers (its static build), as a
# second run of the same tests; programs given as shell scripts run natively in both.
RUNNER = os.environ.get("RUNTARA_TEST_RUNNER", "native")
WORKFLOW_STATIC = os.environ.get("RUNTARA_SDK_WORKFLOW_STATIC",
                                 os.path.join(BUILD, "src/sdk/sdk-workflow-static"))


def image(d, path=WORKFLOW, name="wf", body=None, runner=None):
    if runner is None and RUNNER == "oci" and body is None and path == WORKFLOW:
        path, runner = WORKFLOW_STATIC, "oci"
    runner = runner or "native"
    data = body if body is not None else open(path, "rb").read()
    r = d.upload("acme", name, data, extra=f"&runner_type={runner}")
    assert r.status == 201, r
    return r.json()["image_id"]


def start(d, img, iid, **input):
    r = d.request("POST", "/api/v1/instances",
                  json_body={"image_id": img, "instance_id": iid, "input": input})
    assert r.status == 201, r


def get(d, iid):
    r = d.request("GET", f"/api/v1/instances/{iid}")
    assert r.status == 200, r
    return r.json()


def wait(d, iid, statuses=("completed", "failed", "cancelled"), timeout=60):
    deadline = deadline_in(timeout)
    while time.monotonic() < deadline:
        inst = d.request("GET", f"/api/v1/instances/{iid}?wait=5s").json()
        assert "status" in inst, (iid, inst)
        if inst["status"] in statuses:
            return inst
        if inst["status"] == "suspended":
            time.sleep(0.05)  # ?wait= answers at once for a suspended instance
    raise AssertionError(f"instance {iid} did not settle: {inst}\n{d.logs()[-3000:]}")


def events(d, iid):
    return d.request("GET", f"/api/v1/instances/{iid}/events?limit=1000").json()["events"]


def run_dir(d, iid):
    return os.path.join(d.data_dir, "tenants", "acme", "runs", iid)


def steps_log(d, iid):
    try:
        with open(os.path.join(run_dir(d, iid), "steps.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_until(cond, what, timeout=30):
    deadline = deadline_in(timeout)
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def shim_pid(d, iid, tenant="acme"):
    """The pid of the instance's runtara-shim, from the daemon's launch log line (which names the
    instance by its key, tenant/id)."""
    deadline = deadline_in(10)
    while True:
        for line in d.logs().splitlines():
            if f'instance \\"{tenant}/{iid}\\" launched' in line:
                return int(line.split("pid ")[1].split(")")[0])
        if time.monotonic() > deadline:
            raise AssertionError(f"no launch of {iid} in the log")
        time.sleep(0.01)


def idle_shims(daemon_pid):
    """The runtara-shims a daemon made ahead that still wait for a launch: the children of its
    zygote (its child with --zygote, shim-launch.h), or its own children with --launch-fd when it
    starts them directly; a launched one has moved into its run directory."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            cwd = os.readlink(f"/proc/{name}/cwd")
        except OSError:
            continue
        procs[int(name)] = (int(fields[1]), args, cwd, fields[0])
    zygotes = {pid for pid, (ppid, args, _, _) in procs.items()
               if ppid == daemon_pid and b"--zygote" in args}
    return [pid for pid, (ppid, args, cwd, state) in procs.items()
            if cwd == "/" and state != "Z" and
            (ppid in zygotes or (ppid == daemon_pid and b"--launch-fd" in args))]


def kill_with_machine(pid):
    """What a power loss does to an instance: its shim and its program die, nothing is written."""
    children = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        pass
    os.kill(pid, signal.SIGKILL)
    for c in children:
        try:
            os.killpg(c, signal.SIGKILL)  # the program leads its own process group
        except ProcessLookupError:
            pass


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (reparented, not yet reaped) has ended too
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read)
        return False
