#!/usr/bin/env python3
"""Crash recovery against the real daemon: the daemon killed with SIGKILL while instances run,
exits that happen while it is down, instances that die with the machine, and the limit of
automatic relaunches. The workflow is the SDK example (examples/sdk-workflow), whose calls wait
for a restarting daemon, and whose steps append to steps.log in the run directory."""
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, Daemon, exit_record, main, test  # noqa: E402
from sdkflow import (alive, events, get, idle_shims, image, kill_with_machine,  # noqa: E402
                     run_dir, shim_pid, start, steps_log, wait, wait_until)

@test
def a_second_daemon_on_the_same_data_directory_is_refused():
    """One daemon per data directory: a second one exits 1 naming the first's pid and touches
    nothing; once the first is gone (even by kill -9) the directory is free."""
    a = Daemon().start()
    b = Daemon(data_dir=a.data_dir)
    try:
        b.start(wait=False)
        assert b.proc.wait(20) == 1, b.logs()
        assert f'data directory \\"{a.data_dir}\\" is in use by another runtara-environment ' \
            f'(pid {a.proc.pid}); stop that one first, or give this one its own DATA_DIR' \
            in b.logs(), b.logs()
        assert a.request("GET", "/api/v1/health").status == 200
        assert os.path.exists(os.path.join(a.data_dir, "core.sock")), "the socket was replaced"
        with open(os.path.join(a.data_dir, "runtara.lock")) as f:
            assert f.read() == f"{a.proc.pid}\n"
        a.kill9()
        b.start()
        assert b.request("GET", "/api/v1/health").status == 200
    finally:
        b.cleanup()
        a.cleanup()


@test
def twenty_running_instances_survive_a_kill_9_of_the_daemon():
    d = Daemon().start()
    try:
        img = image(d)
        ids = [f"r{i}" for i in range(20)]
        for iid in ids:
            start(d, img, iid, name=iid, steps=8, step_ms=500)
        wait_until(lambda: all(len(steps_log(d, i)) >= 1 for i in ids), "every instance to run")
        pids = {i: shim_pid(d, i) for i in ids}
        d.kill9()
        # the instances keep running without the daemon
        assert all(alive(p) for p in pids.values()), "a shim died with the daemon"
        time.sleep(0.3)
        d.start()
        for iid in ids:
            inst = wait(d, iid)
            assert inst["status"] == "completed", inst
            # never relaunched: the same launch ran every step, once
            assert inst["attempt"] == 1, inst
            assert inst["output"]["attempts"] == [1] * 8, inst
            assert steps_log(d, iid) == [f"step {k}" for k in range(1, 9)], steps_log(d, iid)
        d.wait_log("20 processes still running")
        # the exit codes are collected from the reattached shims
        wait_until(lambda: all(get(d, i)["exit_code"] == 0 for i in ids), "the exit codes")
        for iid in ids:
            types = [e["type"] for e in events(d, iid)]
            assert types.count("started") == 1 and types.count("completed") == 1, types
            assert types.count("exited") == 1, types
    finally:
        d.cleanup()


@test
def a_launch_not_yet_recorded_survives_a_kill_9_and_is_watched_once():
    """A daemon killed after a launch but before its record (a silent program, and a record delay
    of a minute): the restart finds the row pending and the shim alive, records the launch and
    watches the process once (the running pass must not take it over a second time)."""
    body = b'#!/bin/sh\ntouch up\nwhile [ ! -e go ]; do sleep 0.05; done\nexit 0\n'
    d = Daemon(env={"RUNTARA_LAUNCH_RECORD_MS": "60000"}).start()
    try:
        img = image(d, name="silent", body=body)
        start(d, img, "u1")
        wait_until(lambda: os.path.exists(os.path.join(run_dir(d, "u1"), "up")), "u1 to run")
        assert get(d, "u1")["status"] == "pending"
        d.kill9()
        d.start()
        d.wait_log("1 processes still running")
        assert get(d, "u1")["status"] == "running"
        open(os.path.join(run_dir(d, "u1"), "go"), "w").close()
        done = wait(d, "u1")
        assert (done["status"], done["attempt"]) == ("completed", 1), done
        wait_until(lambda: get(d, "u1")["exit_code"] == 0, "the exit code")
        types = [e["type"] for e in events(d, "u1")]
        assert types == ["started", "exited", "completed"], types
    finally:
        d.cleanup()


@test
def a_launch_through_the_shim_started_ahead_survives_a_kill_9():
    d = Daemon().start()
    try:
        img = image(d, runner="native")  # (the native runner starts shims ahead)
        wait_until(lambda: len(idle_shims(d.proc.pid)) == 1, "a shim started ahead")
        ahead = idle_shims(d.proc.pid)[0]
        start(d, img, "z1", name="z1", steps=4, step_ms=300)
        wait_until(lambda: len(steps_log(d, "z1")) >= 1, "the first step")
        assert shim_pid(d, "z1") == ahead, (shim_pid(d, "z1"), ahead)
        # another waits for the next launch by now
        wait_until(lambda: len(idle_shims(d.proc.pid)) == 1, "the next shim started ahead")
        spare = idle_shims(d.proc.pid)[0]
        assert spare != ahead
        d.kill9()
        assert alive(ahead), "the launched shim died with the daemon"
        # the idle one exits once its daemon is gone: none is left behind
        wait_until(lambda: not alive(spare), "the idle shim to exit", timeout=5)
        time.sleep(0.3)
        d.start()
        inst = wait(d, "z1")
        assert (inst["status"], inst["attempt"]) == ("completed", 1), inst
        assert inst["output"]["attempts"] == [1] * 4, inst
        assert "1 processes still running" in d.logs(), d.logs()[-3000:]
        wait_until(lambda: get(d, "z1")["exit_code"] == 0, "the exit code")
    finally:
        d.cleanup()


@test
def an_exit_while_the_daemon_is_down_is_collected():
    d = Daemon().start()
    try:
        # a program that never talks to the daemon: its exit status is all there is
        script = b"#!/bin/sh\ntouch started\nwhile [ ! -e go ]; do sleep 0.02; done\nexit 3\n"
        img = image(d, name="plain", body=script)
        start(d, img, "x1")
        wait_until(lambda: os.path.exists(os.path.join(run_dir(d, "x1"), "started")), "start")
        pid = shim_pid(d, "x1")
        d.kill9()
        open(os.path.join(run_dir(d, "x1"), "go"), "w").close()
        wait_until(lambda: exit_record(run_dir(d, "x1")) is not None, "exit")
        # the shim writes its exit record, then exits (slowly under ASan): a daemon started in between
        # finds it still running and watches it instead of collecting an exit
        wait_until(lambda: not alive(pid), "the shim's exit")
        d.start()
        inst = wait(d, "x1")
        assert (inst["status"], inst["termination_reason"], inst["exit_code"]) == \
            ("failed", "crashed", 3), inst
        d.wait_log("1 exits collected")
    finally:
        d.cleanup()


ENDED_THEN_EXITS = b"""#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&4)"  # its pipe (RUNTARA_INSTANCE_TOKEN_FD)
sock=${RUNTARA_SERVER_ADDR#unix:}
api() { curl -sf --unix-socket "$sock" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \\
        -H 'Content-Type: application/json' \\
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID$@"; }
api /register -X POST >/dev/null
case "$RUNTARA_INSTANCE_ID" in
    done*) api /completed -X POST -d '{"output": 7}' >/dev/null ;;
    asleep*) api /sleep -X POST -d "{\\"until\\": \\"$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%S.000Z)\\"}" \\
                 >/dev/null ;;
esac
touch reported
while [ ! -e go ]; do sleep 0.02; done
exit 3
"""


@test
def an_exit_after_a_reported_end_while_the_daemon_is_down_is_collected():
    """An instance that reported its end (completed, or suspended by a durable sleep) and whose
    process exited only while the daemon was down still gets its exit recorded at the restart:
    the "exited" event and the exit code, and the row keeps the status it reported."""
    # a stop grace longer than the test, so that no daemon kills the lingering processes
    d = Daemon(env={"RUNTARA_SLEEP_SUSPEND_MS": "0", "RUNTARA_STOP_GRACE_SECS": "3600"}).start()
    try:
        img = image(d, name="lingers", body=ENDED_THEN_EXITS)
        pids = {}
        for iid in ("done1", "asleep1"):
            start(d, img, iid)
            wait_until(lambda: os.path.exists(os.path.join(run_dir(d, iid), "reported")), iid)
            pids[iid] = shim_pid(d, iid)
        assert wait(d, "done1")["status"] == "completed"
        assert wait(d, "asleep1", statuses=("suspended",))["status"] == "suspended"
        d.kill9()
        for iid, pid in pids.items():
            open(os.path.join(run_dir(d, iid), "go"), "w").close()
            wait_until(lambda: not alive(pid), f"the shim of {iid} to exit")
        d.start()
        d.wait_log("2 exits collected")
        done = get(d, "done1")
        assert (done["status"], done["output"], done["exit_code"]) == ("completed", 7, 3), done
        asleep = get(d, "asleep1")
        assert (asleep["status"], asleep["termination_reason"], asleep["exit_code"]) == \
            ("suspended", "sleeping", 3), asleep
        for iid in pids:
            types = [e["type"] for e in events(d, iid)]
            assert types.count("exited") == 1, (iid, types)
        # collected once: a second restart finds nothing left to collect
        d.stop()
        d.start()
        assert d.logs().count("2 exits collected") == 1, d.logs()[-3000:]
        assert [e["type"] for e in events(d, "done1")].count("exited") == 1
    finally:
        d.cleanup()


@test
def instances_that_died_with_the_machine_are_relaunched_from_checkpoints():
    d = Daemon().start()
    try:
        img = image(d)
        start(d, img, "m1", steps=5, step_ms=300)
        wait_until(lambda: len(steps_log(d, "m1")) >= 2, "two steps")
        pid = shim_pid(d, "m1")
        d.kill9()
        kill_with_machine(pid)
        done_before = steps_log(d, "m1")
        d.start()
        inst = wait(d, "m1")
        assert inst["status"] == "completed", inst
        assert inst["attempt"] == 2, inst
        attempts = inst["output"]["attempts"]
        # the steps saved before the crash were replayed, the rest ran in the second launch
        k = attempts.count(1)
        assert k >= 1 and attempts == [1] * k + [2] * (5 - k), attempts
        log = steps_log(d, "m1")
        assert log[:k] == [f"step {i}" for i in range(1, k + 1)], (log, k)
        # only the step the crash interrupted (its side effect done, its result not saved) may
        # have run twice: at least once, never lost
        assert sorted(set(log)) == [f"step {i}" for i in range(1, 6)], log
        assert len(log) - len(set(log)) <= 1 and log.count(f"step {k + 1}") <= 2, log
        assert len(done_before) >= k, (done_before, k)
        ev = events(d, "m1")
        restart = [e for e in ev if e["type"] == "suspended"]
        assert len(restart) == 1 and restart[0]["payload"]["reason"] == \
            "environment_restart", ev
    finally:
        d.cleanup()


@test
def relaunches_stop_at_the_limit_without_a_new_checkpoint():
    d = Daemon(env={"RUNTARA_MAX_AUTO_RESTARTS": "0"}).start()
    try:
        img = image(d)
        start(d, img, "c1", steps=3, step_ms=5000)
        wait_until(lambda: get(d, "c1")["status"] == "running", "running")
        time.sleep(0.2)
        pid = shim_pid(d, "c1")
        d.kill9()
        kill_with_machine(pid)
        d.start()
        inst = get(d, "c1")
        assert (inst["status"], inst["termination_reason"]) == \
            ("suspended", "environment_restart"), inst
        d.wait_log("RUNTARA_MAX_AUTO_RESTARTS=0")
        # it stays so across another restart, until an operator resumes it
        d.stop()
        d.start()
        assert get(d, "c1")["status"] == "suspended"
        r = d.request("POST", "/api/v1/instances/c1/stop", json_body={"grace_secs": 0})
        assert r.status in (200, 202), r
        assert wait(d, "c1")["status"] == "cancelled"
    finally:
        d.cleanup()


@test
def sigterm_drains_and_the_next_start_relaunches():
    d = Daemon(env={"RUNTARA_SHUTDOWN_GRACE_SECS": "3"}).start()
    try:
        img = image(d)
        hung = image(d, name="hung", body=b"#!/bin/sh\nexec sleep 60\n")
        start(d, img, "g1", steps=30, step_ms=100)  # gives way at its next step
        start(d, hung, "g2")  # never calls the daemon: killed when the grace is over
        wait_until(lambda: len(steps_log(d, "g1")) >= 2 and get(d, "g2")["status"] == "running",
                   "both to run")
        t0 = time.time()
        d.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: get(d, "g1")["status"] == "suspended", "g1 to suspend")
        # while it drains: no new starts or resumes, and the health check says so
        r = d.request("POST", "/api/v1/instances", json_body={"image_id": img})
        assert r.status == 503 and r.header("Retry-After") == "10", r
        assert "shutting down" in r.json()["error"]["message"], r
        h = d.request("GET", "/api/v1/health")
        assert h.status == 503 and h.json()["status"] == "draining", h
        assert d.proc.wait(30) == 0
        assert time.time() - t0 >= 2.5, "the daemon did not wait for the grace"
        d.stop()
        d.wait_log("draining for up to 3 s")
        g1_done = len(steps_log(d, "g1"))
        assert g1_done < 30, g1_done
        d.start()
        done = wait(d, "g1")
        assert done["status"] == "completed" and done["attempt"] == 2, done
        attempts = done["output"]["attempts"]
        assert attempts.count(1) == g1_done and attempts[-1] == 2, (attempts, g1_done)
        reasons = [e["payload"].get("reason") for e in events(d, "g1") if e["type"] == "suspended"]
        assert reasons == ["shutdown"], reasons
        # the one killed at the end of the grace was suspended too, and runs again
        wait_until(lambda: get(d, "g2")["status"] == "running" and get(d, "g2")["attempt"] == 2,
                   "g2 to run again")
        reasons = [e["payload"].get("reason") for e in events(d, "g2") if e["type"] == "suspended"]
        assert reasons == ["shutdown"], reasons
    finally:
        d.cleanup()


@test
def a_failed_launch_is_retried_with_backoff_then_fails_with_a_reason():
    body = b"#!/bin/sh\nexit 0\n"
    # the first two launches fail for a passing reason; the third try succeeds
    d = Daemon(env={"RUNTARA_FAULT_FAIL": "launch:2", "RUNTARA_LAUNCH_RETRIES": "2"}).start()
    try:
        img = image(d, name="plain", body=body)
        t0 = time.time()
        start(d, img, "l1")
        done = wait(d, "l1")
        assert done["status"] == "completed" and done["attempt"] == 1, done
        assert time.time() - t0 >= 0.7, "no backoff between the tries"  # 250 + 500 ms
        d.wait_log("(try 1 of 3)", "(try 2 of 3)")
    finally:
        d.cleanup()
    # more failures than retries: the instance ends failed with the reason, not stuck pending
    d = Daemon(env={"RUNTARA_FAULT_FAIL": "launch:5", "RUNTARA_LAUNCH_RETRIES": "2"}).start()
    try:
        img = image(d, name="plain", body=body)
        start(d, img, "l2")
        done = wait(d, "l2")
        assert (done["status"], done["termination_reason"]) == ("failed", "launch_failed"), done
        assert "fault injection" in done["error"], done
    finally:
        d.cleanup()


@test
def a_stop_with_checkpoint_saves_in_flight_ends_cleanly_and_loses_none():
    """A checkpoint save waits suspended for the group commit that holds it (no HTTP thread is
    held), so a stop must resume every waiting save before the HTTP servers go. SIGTERM while 12
    instances save as fast as they can, at once (no grace) and with a drain: the daemon exits
    with 0 and no sanitizer report (Daemon.stop checks both), and after a restart every instance
    finishes with each saved step run once."""
    for grace in ("0", "3"):
        d = Daemon(env={"RUNTARA_SHUTDOWN_GRACE_SECS": grace}).start()
        try:
            img = image(d)
            ids = [f"k{grace}-{i}" for i in range(12)]
            for iid in ids:
                start(d, img, iid, name=iid, steps=300, step_ms=0)
            wait_until(lambda: sum(len(d.request("GET", f"/api/v1/instances/{iid}/checkpoints")
                                           .json()["checkpoints"]) for iid in ids) >= 300,
                       "saves to be under way")
            d.stop()  # SIGTERM: exit status 0, no sanitizer report
            logs = d.logs()
            assert "Fatal error in GNU libmicrohttpd" not in logs, logs[-3000:]
            d.start()
            want = [f"step {k}" for k in range(1, 301)]
            for iid in ids:
                done = wait(d, iid, timeout=120)
                assert done["status"] == "completed", done
                log = steps_log(d, iid)
                if grace == "3" and "did not suspend within the shutdown grace" not in logs:
                    assert log == want, (iid, len(log))  # all gave way at a step boundary
                    continue
                # Killed at once: the step in flight may have done its side effect without its
                # checkpoint, and runs again; a step whose checkpoint was saved never does.
                once = [x for i, x in enumerate(log) if i == 0 or x != log[i - 1]]
                assert once == want and len(log) <= len(want) + 1, (iid, len(log))
        finally:
            d.cleanup()


CLIENT = os.environ.get("RUNTARA_SDK_CLIENT", os.path.join(BUILD, "tests", "test-sdk-client"))


@test
def a_drain_reaches_a_program_parked_in_a_signal_long_poll():
    """A program waiting in GET /signals?wait=30s hears the drain's pause at once, acknowledges
    it and is suspended: long before its poll or the 20 s grace would end."""
    d = Daemon(env={"RUNTARA_SHUTDOWN_GRACE_SECS": "20"}).start()
    try:
        img = image(d, path=CLIENT, name="poller")
        r = d.request("POST", "/api/v1/instances", json_body={
            "image_id": img, "instance_id": "p1",
            "env": {"TEST_SDK_SCENARIO": "poll-ack", "TEST_SDK_ARG": "30",
                    "LD_LIBRARY_PATH": os.path.join(BUILD, "src", "sdk")}})
        assert r.status == 201, r
        wait_until(lambda: any(e["type"] == "registered" for e in events(d, "p1")),
                   "p1 to register")
        time.sleep(0.5)  # into its long-poll (were it not parked yet, it would find the pause)
        t0 = time.time()
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(15) == 0
        took = time.time() - t0
        d.stop()
        assert took < 10, f"the drain took {took:.1f} s: the parked poll was not woken"
        d.start()
        sus = [e["payload"] for e in events(d, "p1") if e["type"] == "suspended"]
        assert sus and sus[0].get("reason") == "shutdown", sus
    finally:
        d.cleanup()


if __name__ == "__main__":
    main()
