#!/usr/bin/env python3
"""runtara-shim in OCI mode, for real, under crun and under runc: the isolation-probe's escapes
all fail, a 32 MiB memory limit OOM-kills, the SDK example runs to its end in a container and
talks to a (fake) daemon through the read-only socket directory, signals reach the container,
a runtime's refusal is recorded, and no container is ever left behind. the exit record carries the
container's figures (oom, memory_peak_bytes, cpu_usec).

Containers need root; without it every test is skipped (exit 77). The bundles are made by
oci-prepare with the runner's own code (oci-bundle.c, oci-spec.c)."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "sdk"))
from harness import BUILD, deadline_in, exit_record, main, test, time_scale  # noqa: E402
from fake_core import FakeCore, Instance  # noqa: E402

SHIM = os.path.join(BUILD, "runtara-shim")
PREPARE = os.environ.get("RUNTARA_OCI_PREPARE", os.path.join(BUILD, "tests/oci-prepare"))
PROBE = os.environ.get("RUNTARA_ISOLATION_PROBE", os.path.join(BUILD, "tests/isolation-probe"))
WORKFLOW = os.environ.get("RUNTARA_SDK_WORKFLOW_STATIC",
                          os.path.join(BUILD, "src/sdk/sdk-workflow-static"))
RUNTIMES = ("crun", "runc")
NOBODY = 65534


class Launch:
    """One launch: a run directory, a per-launch bundle, and the shim started on them."""

    def __init__(self, top, runtime, name, binary, input=None, memory=64 << 20, pids=32,
                 socket_dir=None, env=(), args=()):
        self.runtime = runtime
        self.root = os.path.join(top, "state-" + runtime)
        self.id = f"rt-test-{runtime}-{name}"
        self.run_dir = os.path.join(top, "runs", self.id)
        self.bundle = os.path.join(top, "launch", self.id)
        os.makedirs(self.run_dir)
        os.makedirs(self.bundle)
        os.chown(self.run_dir, NOBODY, NOBODY)  # what the runner will do for uid 65534
        if input is not None:
            with open(os.path.join(self.run_dir, "input.json"), "w") as f:
                json.dump(input, f)
        image = os.path.basename(binary)
        cmd = [PREPARE, "--bundles", os.path.join(top, "bundles"), "--image", image,
               "--binary", binary, "--bundle", self.bundle, "--run-dir", self.run_dir,
               "--id", self.id, "--memory", str(memory), "--pids", str(pids)]
        if socket_dir:
            cmd += ["--socket-dir", socket_dir]
        for e in env:
            cmd += ["--env", e]
        subprocess.run(cmd + ["--", *args], check=True, stdout=subprocess.DEVNULL)
        # the container's cgroup, as the runner hands it to the shim (runner-native.c): the shim
        # reads the container's figures there even once its init is gone
        with open(os.path.join(self.bundle, "config.json")) as f:
            self.cgroups = json.load(f)["linux"].get("cgroupsPath")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [SHIM, "--attempt", "1", "--oci-runtime", self.runtime, "--oci-root", self.root,
             "--oci-id", self.id, "--oci-bundle", self.bundle,
             *(["--oci-cgroups-path", self.cgroups] if self.cgroups else [])], cwd=self.run_dir)
        return self

    def wait(self, timeout=60):
        self.proc.wait(timeout=timeout * time_scale())
        return self.exit()

    def run(self):
        return self.start().wait()

    def exit(self):
        return exit_record(self.run_dir)

    def output(self):
        with open(os.path.join(self.run_dir, "output.json")) as f:
            return json.load(f)

    def log(self):
        with open(os.path.join(self.run_dir, "stderr.log"), errors="replace") as f:
            return f.read()

    def containers(self):
        r = subprocess.run([self.runtime, "--root", self.root, "list", "--quiet"],
                           capture_output=True, text=True, check=True)
        return r.stdout.split()

    def wait_listed(self):
        """Until the runtime lists this launch's container (its program may call out before
        the runtime's own state shows it); the list then."""
        deadline = deadline_in(10)
        while self.containers() != [self.id] and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.containers()


class Workspace:
    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="runtara-oci-")
        os.chmod(self.top, 0o755)  # uid 65534 passes through it to /data

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for rt in RUNTIMES:  # never leave a container behind, even when a test failed
            root = os.path.join(self.top, "state-" + rt)
            if os.path.isdir(root):
                r = subprocess.run([rt, "--root", root, "list", "--quiet"],
                                   capture_output=True, text=True)
                for cid in r.stdout.split():
                    subprocess.run([rt, "--root", root, "delete", "--force", cid],
                                   capture_output=True)
        shutil.rmtree(self.top, ignore_errors=True)


def copy_program(top, path):
    """A private copy: the rootfs hard-links the image binary and makes it 0555."""
    os.makedirs(os.path.join(top, "images"), exist_ok=True)
    dst = os.path.join(top, "images", os.path.basename(path))
    if not os.path.exists(dst):
        shutil.copy(path, dst)
    return dst


def assert_ran(launch, st):
    assert st["kind"] == "exited" and st["exit_code"] == 0, (st, launch.log())
    assert st["memory_peak_bytes"] > 0, st
    assert st["cpu_usec"] > 0, st
    assert st["oom"] is False, st
    assert launch.containers() == [], launch.containers()


def probe(runtime, attempt, pids=32, **input):
    with Workspace() as w:
        launch = Launch(w.top, runtime, attempt, copy_program(w.top, PROBE),
                        input={"try": attempt, **input}, pids=pids)
        st = launch.run()
        assert_ran(launch, st)
        out = launch.output()
        assert out["try"] == attempt and out["escaped"] is False, out
        return out


def each_runtime(fn):
    """One test per runtime, named after both."""
    for rt in RUNTIMES:
        def t(rt=rt):
            fn(rt)
        t.__name__ = f"{fn.__name__}_{rt}"
        test(t)
    return fn


@each_runtime
def test_host_files_cannot_be_read(rt):
    out = probe(rt, "read-host-file")
    assert all(not a["read"] for a in out["attempts"]), out


@each_runtime
def test_rootfs_cannot_be_written(rt):
    out = probe(rt, "write-rootfs")
    assert all(not a["written"] for a in out["attempts"]), out


@each_runtime
def test_host_loopback_is_unreachable(rt):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        out = probe(rt, "connect-loopback", port=server.getsockname()[1])
    assert out["connected"] is False, out


@each_runtime
def test_no_other_process_is_visible(rt):
    # a process of the host with a token in its environment, which the container must not see
    env = dict(os.environ, RUNTARA_INSTANCE_TOKEN="host-secret")
    other = subprocess.Popen(["sleep", "600"], env=env)
    try:
        out = probe(rt, "list-processes")
        assert out["seen"] == 0 and out["self"] == 1, out
        out = probe(rt, "read-token")
        assert out["found_in"] == [], out
    finally:
        other.kill()
        other.wait()


@each_runtime
def test_pids_are_limited(rt):
    out = probe(rt, "pids", pids=16, limit=16, max=200)
    assert 0 < out["count"] < 16, out


@each_runtime
def test_memory_limit_oom_kills(rt):
    with Workspace() as w:
        launch = Launch(w.top, rt, "memory", copy_program(w.top, PROBE),
                        input={"try": "memory", "mib": 64}, memory=32 << 20)
        st = launch.run()
        assert st["kind"] == "signaled" and st["code"] == signal.SIGKILL, st
        assert st["exit_code"] == 128 + signal.SIGKILL, st
        assert st["oom"] is True, st
        assert st["memory_peak_bytes"] > 0, st
        assert not os.path.exists(os.path.join(launch.run_dir, "output.json"))
        assert launch.containers() == []


def workflow_launch(w, rt, name, core_input, socket_dir, core):
    env = [f"{k}={v}" for k, v in core.env().items() if k != "RUNTARA_SERVER_ADDR"]
    env.append("RUNTARA_SERVER_ADDR=unix:/run/runtara/core.sock")
    return Launch(w.top, rt, name, copy_program(w.top, WORKFLOW), socket_dir=socket_dir, env=env)


def fake_core(w, input):
    socket_dir = os.path.join(w.top, "sock")
    os.makedirs(socket_dir)
    os.chmod(socket_dir, 0o755)
    path = os.path.join(socket_dir, "core.sock")
    core = FakeCore(path, instance=Instance(input=input)).start()
    os.chmod(path, 0o666)  # uid 65534 connects; the daemon's socket must allow it as well
    return core, socket_dir


@each_runtime
def test_sdk_workflow_runs_in_a_container(rt):
    with Workspace() as w:
        core, socket_dir = fake_core(w, {"name": "ada", "steps": 3, "step_ms": 0})
        try:
            launch = workflow_launch(w, rt, "sdk", None, socket_dir, core)
            st = launch.run()
            assert_ran(launch, st)
            inst = core.instance
            assert inst.status == "completed", (inst.status, inst.error, launch.log())
            assert inst.output["greeting"] == "hello ada", inst.output
            with open(os.path.join(launch.run_dir, "steps.log")) as f:
                assert f.read().split("\n")[:3] == ["step 1", "step 2", "step 3"]
        finally:
            core.stop()


@each_runtime
def test_sigquit_kills_the_container(rt):
    with Workspace() as w:
        core, socket_dir = fake_core(w, {"name": "ada", "steps": 1, "step_ms": 600000})
        try:
            launch = workflow_launch(w, rt, "quit", None, socket_dir, core).start()
            # running: it has registered with the daemon (an event, not a delay)
            assert core.wait_for(lambda i: i.status == "running", timeout=30 * time_scale()), \
                launch.log()
            assert launch.wait_listed() == [launch.id], launch.containers()
            launch.proc.send_signal(signal.SIGQUIT)
            st = launch.wait()
            assert st["kind"] == "signaled" and st["code"] == signal.SIGKILL, st
            assert st["oom"] is False and st["memory_peak_bytes"] > 0, st
            assert launch.containers() == []
        finally:
            core.stop()


@each_runtime
def test_sigterm_ends_a_program_without_a_handler(rt):
    """pid 1 of a namespace is spared the default action of SIGTERM; the shim makes the program
    end as it would natively (the SDK example installs no handler)."""
    with Workspace() as w:
        core, socket_dir = fake_core(w, {"name": "ada", "steps": 1, "step_ms": 600000})
        try:
            launch = workflow_launch(w, rt, "term", None, socket_dir, core).start()
            assert core.wait_for(lambda i: i.status == "running", timeout=30 * time_scale())
            launch.proc.send_signal(signal.SIGTERM)
            st = launch.wait()
            assert st["kind"] == "signaled" and st["code"] == signal.SIGTERM, st
            assert st["exit_code"] == 128 + signal.SIGTERM, st
            assert launch.containers() == []
        finally:
            core.stop()


@each_runtime
def test_sigterm_reaches_a_handler(rt):
    with Workspace() as w:
        launch = Launch(w.top, rt, "handler", copy_program(w.top, PROBE),
                        input={"try": "wait-term"})
        launch.start()
        deadline = deadline_in(30)
        ready = os.path.join(launch.run_dir, "ready")
        while not os.path.exists(ready):  # the probe says when its handler is in place
            assert time.monotonic() < deadline and launch.proc.poll() is None, launch.log()
            time.sleep(0.01)
        launch.proc.send_signal(signal.SIGTERM)
        st = launch.wait()
        assert st["kind"] == "exited" and st["exit_code"] == 0, (st, launch.log())
        assert launch.output()["signal"] == signal.SIGTERM, launch.output()


@each_runtime
def test_a_killed_shim_leaves_the_container_to_the_runner(rt):
    """The container outlives a shim killed with SIGKILL (nothing ties its init to the shim):
    the runner finds no exit record and kills it with `<runtime> delete --force`, as
    oci_container_kill() does."""
    with Workspace() as w:
        core, socket_dir = fake_core(w, {"name": "ada", "steps": 1, "step_ms": 600000})
        try:
            launch = workflow_launch(w, rt, "orphan", None, socket_dir, core).start()
            assert core.wait_for(lambda i: i.status == "running", timeout=30 * time_scale())
            launch.proc.kill()
            launch.proc.wait()
            assert exit_record(launch.run_dir) is None
            assert launch.wait_listed() == [launch.id], launch.containers()
            subprocess.run([rt, "--root", launch.root, "delete", "--force", launch.id],
                           check=True, capture_output=True)
            assert launch.containers() == []
        finally:
            core.stop()


@each_runtime
def test_a_refused_start_is_recorded(rt):
    with Workspace() as w:
        launch = Launch(w.top, rt, "refused", copy_program(w.top, PROBE), input={})
        with open(os.path.join(launch.bundle, "config.json"), "w") as f:
            f.write("{not json")
        st = launch.run()
        assert st["kind"] == "spawn_failed" and st["exit_code"] == 127, st
        assert f'could not run container "{launch.id}" with "{rt}"' in st["error"], st
        assert launch.containers() == []


if __name__ == "__main__":
    if os.geteuid() != 0:
        print("1..0 # SKIP containers need root")
        print("0 passed, 0 failed")
        sys.exit(77)
    for rt in RUNTIMES:
        if not shutil.which(rt):
            print(f"# {rt} is not installed: scripts/install-deps.sh installs it")
            print("0 passed, 1 failed")
            sys.exit(1)
    main()
