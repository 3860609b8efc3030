#!/usr/bin/env python3
"""Durable time against the real daemon: sleeps that hold no process and wake on time, also
across a daemon killed with SIGKILL; thousands of sleepers each woken exactly once; signal waits
satisfied and timed out; and crashes at the fault points around a wake claim and a checkpoint
save, which must lose and duplicate nothing. The workflow is the SDK example
(examples/sdk-workflow: steps, then an optional durable sleep and an optional signal wait)."""
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, Daemon, main, test, deadline_in, time_scale  # noqa: E402
from sdkflow import (WORKFLOW, events, get, image, run_dir, shim_pid, start, steps_log,  # noqa: E402
                     wait, wait_until)


def types(d, iid):
    return [e["type"] for e in events(d, iid)]


def process_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # (gone between the open and the read)
        return True


def wait_status(d, iid, status, reason, timeout=30):
    def there():
        inst = get(d, iid)
        return inst["status"] == status and inst["termination_reason"] == reason
    wait_until(there, f"{iid} to be {status} ({reason})", timeout)
    return get(d, iid)


@test
def a_two_second_sleep_holds_no_process_and_wakes_on_time():
    d = Daemon().start()
    try:
        img = image(d)
        t0 = time.time()
        start(d, img, "s1", steps=1, sleep_ms=2000)
        inst = wait_status(d, "s1", "suspended", "sleeping")
        pid = shim_pid(d, "s1")
        # the process exits once suspended: nothing runs during the sleep
        wait_until(lambda: process_gone(pid), "the sleeping process to exit")
        assert get(d, "s1")["status"] == "suspended"
        done = wait(d, "s1")
        elapsed = time.time() - t0
        assert done["status"] == "completed", done
        assert elapsed >= 2.0, elapsed
        assert done["attempt"] == 2 and done["output"]["attempts"] == [1], done
        assert steps_log(d, "s1") == ["step 1"]
        ev = events(d, "s1")
        woken = [e for e in ev if e["type"] == "woken"]
        assert len(woken) == 1 and woken[0]["payload"]["late_ms"] < 1000 * time_scale(), woken
        sus = [e for e in ev if e["type"] == "suspended"][0]["payload"]
        assert sus["reason"] == "sleeping" and sus["wake_at"].endswith("Z"), sus
        d.wait_log("woke", "after its deadline")
        assert inst["termination_reason"] == "sleeping"
    finally:
        d.cleanup()


@test
def a_short_sleep_stays_in_the_process():
    d = Daemon().start()
    try:
        img = image(d)
        done = (start(d, img, "short", steps=0, sleep_ms=300), wait(d, "short"))[1]
        assert done["status"] == "completed" and done["attempt"] == 1, done
        assert "suspended" not in types(d, "short")
    finally:
        d.cleanup()


def sleep_across_a_kill(restart_after_deadline):
    d = Daemon().start()
    try:
        img = image(d)
        start(d, img, "k", steps=1, sleep_ms=2000)
        wait_status(d, "k", "suspended", "sleeping")
        d.kill9()
        if restart_after_deadline:
            time.sleep(2.5)
        d.start()
        done = wait(d, "k")
        assert done["status"] == "completed" and done["attempt"] == 2, done
        t = types(d, "k")
        assert t.count("woken") == 1 and t.count("started") == 2, t
    finally:
        d.cleanup()


@test
def a_sleep_survives_a_kill_9_restarted_before_the_deadline():
    sleep_across_a_kill(False)


@test
def an_overdue_sleep_wakes_at_once_after_a_kill_9():
    sleep_across_a_kill(True)


@test
def two_thousand_sleepers_each_wake_exactly_once():
    """Sleepers left in the store by a daemon that went away (seeded directly, so the test does
    not need 2,000 processes to fall asleep first): the next daemon rebuilds its heap from the
    store and wakes each at its deadline, once. The mock runner stands in for the relaunches."""
    n = 2000
    d = Daemon(env={"RUNTARA_RUNNER": "mock", "RUNTARA_LOG_LEVEL": "notice"}).start()
    try:
        r = d.upload("acme", "wf", b"#!/bin/sh\nexit 0\n", extra="&runner_type=native")
        img = r.json()["image_id"]
        start(d, img, "seed")  # creates the schema and one ordinary row to copy
        wait(d, "seed")
        d.stop()
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        now_us = int(time.time() * 1e6)
        first = now_us + 1_500_000
        rows = [(f"acme/z{i:04d}", f"z{i:04d}", "acme", img, "suspended", now_us, now_us,
                 "sleeping", first + i * 5_000_000 // n) for i in range(n)]
        db.executemany("INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                       "status, created_at, updated_at, termination_reason, sleep_until) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.commit()
        db.close()
        d.start()
        deadline = deadline_in(120)
        while time.monotonic() < deadline:
            counts = d.request("GET", "/api/v1/instances?status=completed&limit=1").json()
            if counts["total"] >= n + 1:
                break
            time.sleep(0.2)
        d.stop()  # the daemon holds its database alone
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        woken = dict(db.execute("SELECT instance_key, COUNT(*) FROM events WHERE type = 'woken' "
                                "GROUP BY instance_key").fetchall())
        started = dict(db.execute("SELECT instance_key, COUNT(*) FROM events WHERE type = "
                                  "'started' GROUP BY instance_key").fetchall())
        late = [row[0] for row in db.execute(
            "SELECT json_extract(payload, '$.late_ms') FROM events WHERE type = 'woken'")]
        status = dict(db.execute("SELECT status, COUNT(*) FROM instances WHERE instance_id "
                                 "LIKE 'z%' GROUP BY status").fetchall())
        db.close()
        assert status == {"completed": n}, status
        assert len(woken) == n and set(woken.values()) == {1}, \
            [k for k, v in woken.items() if v != 1][:5]
        assert set(started[f"acme/z{i:04d}"] for i in range(n)) == {1}
        late.sort()
        print(f"# wake lateness over {n} sleepers: p50 {late[n // 2]:.1f} ms, "
              f"p99 {late[n * 99 // 100]:.1f} ms, max {late[-1]:.1f} ms")
    finally:
        d.cleanup()


@test
def a_signal_wait_is_satisfied_by_the_signal():
    d = Daemon().start()
    try:
        img = image(d)
        start(d, img, "w1", steps=1, wait_key="approval")
        inst = wait_status(d, "w1", "suspended", "waiting_signal")
        assert inst["termination_reason"] == "waiting_signal"
        pid = shim_pid(d, "w1")
        wait_until(lambda: process_gone(pid), "the waiting process to exit")
        # a signal for another key does not wake it
        r = d.request("POST", "/api/v1/instances/w1/signals/custom",
                      json_body={"wait_key": "other", "payload": 1})
        assert r.status == 202, r
        time.sleep(0.3)
        assert get(d, "w1")["status"] == "suspended"
        r = d.request("POST", "/api/v1/instances/w1/signals/custom",
                      json_body={"wait_key": "approval", "payload": {"by": "ada"}})
        assert r.status == 202, r
        done = wait(d, "w1")
        assert done["status"] == "completed", done
        assert done["output"]["signal"] == {"by": "ada"}, done
        assert done["attempt"] == 2 and types(d, "w1").count("woken") == 1
    finally:
        d.cleanup()


@test
def a_signal_already_sent_is_taken_without_suspending():
    d = Daemon().start()
    try:
        img = image(d)
        # the signal waits for the instance: sent while the steps still run
        start(d, img, "w2", steps=2, step_ms=400, wait_key="go")
        r = d.request("POST", "/api/v1/instances/w2/signals/custom",
                      json_body={"wait_key": "go", "payload": [1, 2]})
        assert r.status == 202, r
        done = wait(d, "w2")
        assert done["output"]["signal"] == [1, 2] and done["attempt"] == 1, done
    finally:
        d.cleanup()


@test
def a_crash_between_a_signal_delivery_and_its_reply_loses_nothing():
    """The signal is taken and saved as the wait's checkpoint, then the daemon dies before it
    replies: the SDK's repeat of the call finds the delivery in the checkpoint."""
    d = Daemon(env={"RUNTARA_FAULT": "signal-delivered"}).start()
    try:
        img = image(d)
        start(d, img, "w4", steps=2, step_ms=400, wait_key="go")
        r = d.request("POST", "/api/v1/instances/w4/signals/custom",
                      json_body={"wait_key": "go", "payload": {"n": 7}})
        assert r.status == 202, r
        done = recover(d, "w4")
        assert done["status"] == "completed", done
        assert done["output"]["signal"] == {"n": 7} and done["attempt"] == 1, done
    finally:
        d.cleanup()


@test
def a_signal_wait_times_out():
    d = Daemon().start()
    try:
        img = image(d)
        start(d, img, "w3", steps=0, wait_key="never", wait_ms=1500)
        wait_status(d, "w3", "suspended", "waiting_signal")
        done = wait(d, "w3")
        assert done["status"] == "completed" and done["output"]["timed_out"] is True, done
        assert done["attempt"] == 2, done
    finally:
        d.cleanup()


@test
def a_crash_between_the_wake_claim_and_the_launch_loses_nothing():
    d = Daemon(env={"RUNTARA_FAULT": "wake-claimed"}).start()
    try:
        img = image(d)
        start(d, img, "f1", steps=1, sleep_ms=1200)
        wait_status(d, "f1", "suspended", "sleeping")
        # the daemon kills itself right after it claimed the wake
        d.proc.wait(20)
        assert 'crashing at \\"wake-claimed\\"' in d.logs() or \
            'crashing at "wake-claimed"' in d.logs(), d.logs()[-2000:]
        d.stop()
        assert get_from_db(d, "f1") == "pending"
        d.env.pop("RUNTARA_FAULT")
        d.start()
        done = wait(d, "f1")
        assert done["status"] == "completed" and done["attempt"] == 2, done
        t = types(d, "f1")
        assert t.count("woken") == 1 and t.count("started") == 2, t
    finally:
        d.cleanup()



def recover(d, iid):
    """The daemon kills itself at its RUNTARA_FAULT point: wait for that, start it again without
    the fault, and return instance iid once it has ended."""
    d.proc.wait(30)
    d.stop()
    d.env.pop("RUNTARA_FAULT")
    d.start()
    return wait(d, iid)

def get_from_db(d, iid):
    db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
    try:
        return db.execute("SELECT status FROM instances WHERE instance_id = ?",
                          (iid,)).fetchone()[0]
    finally:
        db.close()


@test
def a_crash_between_a_checkpoint_write_and_its_reply_loses_nothing():
    # the third checkpoint save of the run is durable, then the daemon dies before replying
    d = Daemon(env={"RUNTARA_FAULT": "checkpoint-saved@3"}).start()
    try:
        img = image(d)
        start(d, img, "c1", steps=5, step_ms=100)
        done = recover(d, "c1")
        assert done["status"] == "completed", done
        # the program rode out the restart: one launch, every step once
        assert done["attempt"] == 1 and done["output"]["attempts"] == [1] * 5, done
        assert steps_log(d, "c1") == [f"step {k}" for k in range(1, 6)], steps_log(d, "c1")
        cps = d.request("GET", "/api/v1/instances/c1/checkpoints").json()["checkpoints"]
        assert [c["key"] for c in cps] == [f"step-{k}" for k in range(1, 6)], cps
    finally:
        d.cleanup()


CLIENT = os.environ.get("RUNTARA_SDK_CLIENT", os.path.join(os.path.dirname(WORKFLOW),
                                                            "test-sdk-client"))


@test
def a_silent_instance_is_killed_after_the_heartbeat_timeout():
    # 2 s: a program under TSan on a loaded machine can take over a second to send its first beat
    d = Daemon(env={"RUNTARA_HEARTBEAT_TIMEOUT_SECS": "2"}).start()
    try:
        # a program that never calls the daemon: no heartbeat, no checkpoint
        hung = image(d, name="hung", body=b"#!/bin/sh\nexec sleep 60\n")
        t0 = time.time()
        start(d, hung, "h1")
        done = wait(d, "h1")
        assert (done["status"], done["termination_reason"], done["exit_code"]) == \
            ("failed", "heartbeat_timeout", 137), done
        assert 2.0 <= time.time() - t0 < 12, time.time() - t0
        # an SDK program busy in one long step for 3 s: its background thread keeps it alive
        quiet = image(d, name="quiet", path=CLIENT)
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": quiet, "instance_id": "q1",
            "env": {"TEST_SDK_SCENARIO": "quiet", "TEST_SDK_ARG": "5000",
                    # test-sdk-client links the build's libruntara.so
                    "LD_LIBRARY_PATH": os.path.join(BUILD, "src", "sdk")}})
        assert r.status == 201, r
        done = wait(d, "q1")
        assert done["status"] == "completed" and done["output"] == {"quiet": True}, done
        beats = [e for e in events(d, "q1") if e["type"] == "heartbeat"]
        assert get(d, "q1")["heartbeat_at"] is not None
        assert beats == [], "heartbeats are recorded on the instance, not as events"
    finally:
        d.cleanup()


@test
def retention_deletes_old_finished_instances_and_unused_images():
    d = Daemon(env={"RUNTARA_RETENTION_SECS": "2", "RUNTARA_RETENTION_INTERVAL_SECS": "1"}).start()
    try:
        old = image(d, name="app", body=b"#!/bin/sh\nexit 0\n")
        start(d, old, "done1")
        assert wait(d, "done1")["status"] == "completed"
        new = image(d, name="app", body=b"#!/bin/sh\nexit 0\n# v2\n")
        alone = image(d, name="alone", body=b"#!/bin/sh\nexit 0\n")
        hung = image(d, name="hung", body=b"#!/bin/sh\nexec sleep 60\n")
        start(d, hung, "live")
        run = run_dir(d, "done1")
        assert os.path.isdir(run)
        # kept while young
        time.sleep(0.5)
        assert d.request("GET", "/api/v1/instances/done1").status == 200
        wait_until(lambda: d.request("GET", "/api/v1/instances/done1").status == 404,
                   "the finished instance to be deleted", timeout=15)
        # the row goes first, then the run directory
        wait_until(lambda: not os.path.exists(run), "the run directory to be removed")
        assert d.request("GET", "/api/v1/instances/done1/events").status == 404
        # the superseded version went once nothing used it; the newest versions stay, and so
        # does the image of an instance that still runs
        wait_until(lambda: d.request("GET", f"/api/v1/images/{old}").status == 404,
                   "the superseded image to be deleted", timeout=15)
        wait_until(lambda: not os.path.exists(os.path.join(d.data_dir, "images", old)),
                   "the image's files to be removed")
        for img in (new, alone, hung):
            assert d.request("GET", f"/api/v1/images/{img}").status == 200
        assert get(d, "live")["status"] == "running"
        wait_until(lambda: "retention: deleted 1 finished instances" in d.logs(),
                   "the retention pass to report")
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
