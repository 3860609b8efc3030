#!/usr/bin/env python3
"""Several daemons on one PostgreSQL database (src/sched/README.md, "Several daemons on one
database"): each with its own DATA_DIR, the instances owned by one daemon at a time under a lease,
images launched by daemons that did not register them, a daemon killed with SIGKILL in the middle
of a workload and its instances taken over, and 2,000 sleepers over three daemons, each woken
once. The workflow is the SDK example (examples/sdk-workflow): its steps append to steps.log in
the run directory, and its output says which launch ran each step."""
import concurrent.futures
import hashlib
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import pg  # noqa: E402
from harness import Daemon, deadline_in, main, test  # noqa: E402
from sdkflow import WORKFLOW, events, get, image, start, steps_log, wait, wait_until  # noqa: E402


def daemons(n, **env):
    url = pg.fresh_database()
    ds = [Daemon(env=dict({"RUNTARA_DATABASE_URL": url}, **env)) for _ in range(n)]
    for d in ds:
        d.start()
    return url, ds


def processes_under(path):
    """Pids of the processes whose working directory is under path (a killed daemon's shims and
    programs, which outlive it)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/cwd").startswith(path + "/"):
                    pids.append(int(name))
            except OSError:
                pass
    return pids


def start_running(d, img, ids, steps, first_steps=1):
    """Start instances of steps steps of 300 ms through d; return once each has run first_steps."""
    for iid in ids:
        start(d, img, iid, name=iid, steps=steps, step_ms=300)
    wait_until(lambda: all(len(steps_log(d, i)) >= first_steps for i in ids),
               "the instances to run")


def finished_after_takeover(d, iid, steps, new_owners):
    """Wait for iid, taken over from its first daemon, to complete through d: the steps its first
    launch saved are replayed, never run again, and only the rest ran under new_owners (their
    steps.log). Returns how many steps the first launch saved."""
    done = wait(d, iid, timeout=120)
    assert done["status"] == "completed", done
    attempts = done["output"]["attempts"]
    assert attempts == sorted(attempts), (iid, attempts)  # never two launches at once
    saved = attempts.count(1)
    ran_after = [line for n in new_owners for line in steps_log(n, iid)]
    assert ran_after == [f"step {k}" for k in range(saved + 1, steps + 1)], \
        (iid, attempts, ran_after)
    types = [e["type"] for e in events(d, iid)]
    assert types.count("completed") == 1 and "failed" not in types, types
    return saved


def cleanup(ds):
    for d in ds:
        for pid in processes_under(d.data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        d.cleanup()


@test
def an_image_registered_through_one_daemon_runs_on_another():
    """B does not share A's DATA_DIR: it fetches the bytes from the database once, checks their
    SHA-256 and keeps them in its own images/."""
    url, (a, b) = daemons(2)
    try:
        img = image(a)
        start(b, img, "x1", name="x1", steps=2)
        done = wait(b, "x1")
        assert done["status"] == "completed", done
        assert done["output"]["greeting"] == "hello x1", done
        with open(os.path.join(b.data_dir, "images", img, "binary"), "rb") as f:
            got = hashlib.sha256(f.read()).hexdigest()
        with open(WORKFLOW, "rb") as f:
            assert got == hashlib.sha256(f.read()).hexdigest()
        # each instance is owned by the daemon that launched it
        owners = pg.psql(url, "SELECT owner FROM instances").split()
        registered = pg.psql(url, "SELECT id FROM daemons").split()
        assert len(registered) == 2, registered
        with open(os.path.join(b.data_dir, "daemon-id")) as f:
            b_id = f.read().strip()
        assert owners == [b_id], owners
        # the API names it: the instance's daemon, and each daemon's health
        assert get(a, "x1")["daemon"] == b_id
        assert b.request("GET", "/api/v1/health").json()["daemon"] == b_id
        assert a.request("GET", "/api/v1/health").json()["daemon"] != b_id
    finally:
        cleanup([a, b])


@test
def a_daemon_killed_mid_workload_is_taken_over():
    """Three daemons, 30 instances of 6 steps spread over them; one daemon killed with SIGKILL.
    After its lease (2 s) the others take its instances over and relaunch them from their
    checkpoints: every instance completes, no step that finished runs again, and no checkpoint of
    the dead daemon's launch comes after one of the new launch (the old process cannot save once
    its token is replaced)."""
    url, ds = daemons(3, RUNTARA_LEASE_SECS="2")
    a = ds[0]
    try:
        img = image(a)
        ids = [f"k{i}" for i in range(30)]
        for i in (1, 2, 0):  # a's last: they are the ones still running when it is killed
            start_running(ds[i], img, ids[i::3], steps=6)
        on_a = ids[0::3]
        listed = ds[1].request("GET", "/api/v1/daemons").json()["daemons"]
        assert sorted((x["live"], x["self"]) for x in listed) == \
            [(True, False), (True, False), (True, True)], listed
        # a's ten at least, which run until the kill; others' may have completed meanwhile
        assert 10 <= sum(x["instances"] for x in listed) <= 30, listed
        a.kill9()
        killed = time.monotonic()
        b = ds[1]
        # taken over: each of a's instances launched again by another daemon
        wait_until(lambda: all(get(b, i)["attempt"] >= 2 for i in on_a), "the takeover",
                   timeout=60)
        takeover = time.monotonic() - killed
        for iid in ids:
            if iid not in on_a:
                done = wait(b, iid, timeout=120)
                assert done["output"]["attempts"] == [1] * 6, done
                continue
            saved = finished_after_takeover(b, iid, 6, ds[1:])
            assert steps_log(a, iid)[:saved] == [f"step {k}" for k in range(1, saved + 1)], \
                (iid, steps_log(a, iid))
        print(f"# takeover of {len(on_a)} instances {takeover:.2f} s after the kill "
              "(RUNTARA_LEASE_SECS=2)", flush=True)
        assert pg.psql(url, "SELECT count(*) FROM daemons") == "2"
        listed = ds[2].request("GET", "/api/v1/daemons").json()["daemons"]
        assert len(listed) == 2 and all(x["live"] for x in listed), listed
    finally:
        cleanup(ds)


@test
def a_daemon_stopped_cleanly_hands_its_instances_over():
    """SIGTERM: B suspends its running instances at a checkpoint and unregisters, and A takes
    them over at its next renewal and finishes them, no finished step run again. Then A stops the
    same way with sleepers of its own, and B, started again on its DATA_DIR, takes them at
    start-up and wakes each once."""
    url, (a, b) = daemons(2, RUNTARA_LEASE_SECS="2")
    try:
        img = image(a)
        ids = [f"h{i}" for i in range(4)]
        start_running(b, img, ids, steps=6)
        b.stop()
        a_id = a.request("GET", "/api/v1/health").json()["daemon"]
        for iid in ids:
            finished_after_takeover(a, iid, 6, [a])
            assert get(a, iid)["daemon"] == a_id

        sleepers = [f"z{i}" for i in range(3)]
        for iid in sleepers:
            start(a, img, iid, name=iid, steps=1, sleep_ms=4000)
        wait_until(lambda: all(get(a, i)["status"] == "suspended" for i in sleepers),
                   "the sleepers to suspend")
        a.stop()
        b.start()
        for iid in sleepers:
            done = wait(b, iid, timeout=60)
            assert done["status"] == "completed", done
            types = [e["type"] for e in events(b, iid)]
            assert types.count("woken") == 1 and types.count("started") == 2, types
    finally:
        cleanup([a, b])


@test
def a_daemon_that_stalls_past_its_lease_gives_its_instances_up():
    """A stopped (SIGSTOP) longer than its lease: B takes its running instances over and
    relaunches them. When A goes on, its old processes can save nothing (their token is
    replaced), their ends are not recorded over B's launches, and A registers again; every
    instance completes once, no finished step run again."""
    url, (a, b) = daemons(2, RUNTARA_LEASE_SECS="2")
    try:
        img = image(a)
        ids = [f"t{i}" for i in range(3)]
        start_running(a, img, ids, steps=8, first_steps=2)
        a.proc.send_signal(signal.SIGSTOP)
        try:
            wait_until(lambda: all(get(b, i)["attempt"] >= 2 for i in ids), "the takeover",
                       timeout=60)
        finally:
            a.proc.send_signal(signal.SIGCONT)
        for iid in ids:
            finished_after_takeover(b, iid, 8, [b])
        a.wait_log("this daemon's lease ended before it was renewed", timeout=30)
        wait_until(lambda: pg.psql(url, "SELECT count(*) FROM daemons") == "2",
                   "a to register again")
        # its old processes are gone, and nothing of theirs was recorded after b's launches
        wait_until(lambda: not processes_under(a.data_dir), "a's old processes to end")
        for iid in ids:
            assert get(b, iid)["status"] == "completed"
    finally:
        cleanup([a, b])


@test
def two_thousand_sleepers_over_three_daemons_are_each_woken_once():
    """2,000 instances that sleep durably (suspended, no process) for 3 s, started through three
    daemons: each daemon wakes its own, each instance is woken exactly once and completes."""
    url, ds = daemons(3)
    try:
        img = image(ds[0])
        n = 2000
        ids = [f"s{i}" for i in range(n)]

        def go(i):
            start(ds[i % 3], img, ids[i], name=ids[i], steps=0, sleep_ms=3000)

        with concurrent.futures.ThreadPoolExecutor(12) as ex:
            list(ex.map(go, range(n)))
        deadline = deadline_in(300)
        while True:
            left = pg.psql(url, "SELECT count(*) FROM instances WHERE status <> 'completed'")
            if left == "0":
                break
            assert time.monotonic() < deadline, f"{left} instances not completed"
            time.sleep(0.5)
        woken = pg.psql(url, "SELECT count(*), count(DISTINCT instance_key) FROM events "
                             "WHERE type = 'woken'")
        assert woken == f"{n}|{n}", woken
        starts = pg.psql(url, "SELECT count(*) FROM events WHERE type = 'started'")
        assert starts == str(2 * n), starts
        owners = pg.psql(url, "SELECT count(DISTINCT owner) FROM instances")
        assert owners == "3", owners
        assert [e["type"] for e in events(ds[1], ids[1])].count("woken") == 1
    finally:
        cleanup(ds)


if __name__ == "__main__":
    main()
