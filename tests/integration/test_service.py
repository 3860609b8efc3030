#!/usr/bin/env python3
"""The daemon as a systemd service (Type=notify): READY=1 once it serves, WATCHDOG=1 from its
event loop at the pace WATCHDOG_USEC asks for, STOPPING=1 at SIGTERM. The notification socket is
the test's own (NOTIFY_SOCKET), as systemd would pass it."""
import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, deadline_in, main, test, time_scale  # noqa: E402


def notifications(sock, until, want):
    """Datagrams received until want(messages) holds or the deadline passes; the messages, as
    lists of KEY=VALUE lines."""
    got = []
    while not want(got):
        left = until - time.monotonic()
        assert left > 0, f"timed out; notifications so far: {got}"
        sock.settimeout(left)
        got.append(sock.recv(4096).decode().split("\n"))
    return got


@test
def ready_watchdog_and_stopping_are_sent_to_systemd():
    d = Daemon()
    path = os.path.join(d.tmp, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    d.env["NOTIFY_SOCKET"] = path
    d.env["WATCHDOG_USEC"] = "400000"  # 0.4 s: a ping at least every 0.2 s
    try:
        d.start()
        got = notifications(sock, deadline_in(30), lambda m: any("READY=1" in x for x in m))
        ready = next(x for x in got if "READY=1" in x)
        assert f"STATUS=serving on 127.0.0.1:{d.port}" in ready, ready
        # it serves once it says so
        assert d.request("GET", "/api/v1/health").status == 200
        t0 = time.monotonic()
        got = notifications(sock, deadline_in(30),
                            lambda m: sum("WATCHDOG=1" in x for x in m) >= 5)
        # five pings well within five periods of 0.4 s (the loop pings every half period)
        assert time.monotonic() - t0 < 5 * 0.4 * time_scale(), time.monotonic() - t0
        os.kill(d.proc.pid, signal.SIGTERM)
        notifications(sock, deadline_in(30), lambda m: any("STOPPING=1" in x for x in m))
    finally:
        sock.close()
        d.cleanup()


if __name__ == "__main__":
    main()
