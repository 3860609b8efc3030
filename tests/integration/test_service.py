#!/usr/bin/env python3
"""The daemon as a system service: the notifications of Type=notify (READY=1 once it serves,
WATCHDOG=1 from its event loop at the pace WATCHDOG_USEC asks for, STOPPING=1 at SIGTERM, to a
NOTIFY_SOCKET of the test's own, as systemd would pass it), the settings file, the manual pages
and the bash completion of runtara-ctl."""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import BUILD, CTL, DAEMON, Daemon, deadline_in, main, test, time_scale  # noqa: E402


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



@test
def the_settings_file_sets_what_the_environment_does_not():
    """RUNTARA_SETTINGS_FILE (default /etc/runtara/environment): NAME=value lines under the
    environment; an unknown name or a bad value stops the start, naming the file and line."""
    d = Daemon()
    path = os.path.join(d.tmp, "environment")
    with open(path, "w") as f:
        f.write("# written by the operator\n"
                f"RUNTARA_ENV_HTTP_PORT={d.port + 1}\n"  # the environment's port wins
                "RUNTARA_LOG_LEVEL=warning\n"
                "RUNTARA_MAX_WAITERS='77'\n")
    d.env["RUNTARA_SETTINGS_FILE"] = path
    del d.env["RUNTARA_LOG_LEVEL"]
    try:
        p = subprocess.run([DAEMON, "--print-config"], env=d.env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert f"RUNTARA_ENV_HTTP_PORT={d.port}  # from environment\n" in p.stdout, p.stdout
        assert f"RUNTARA_MAX_WAITERS=77  # from {path}, line 4\n" in p.stdout, p.stdout
        assert f"RUNTARA_LOG_LEVEL=warning  # from {path}, line 3\n" in p.stdout, p.stdout
        d.start()
        assert d.request("GET", "/api/v1/health").status == 200
        assert "level=info" not in d.logs(), d.logs()[-2000:]  # warning and above only
    finally:
        d.cleanup()

    for text, words in (("RUNTARA_ENV_HTTP_PROT=9000\n",
                         f'{path}, line 1: unknown setting "RUNTARA_ENV_HTTP_PROT"'),
                        ("# ok\nRUNTARA_MAX_WAITERS=lots\n",
                         f'{path}, line 2: invalid value "lots" for RUNTARA_MAX_WAITERS')):
        os.makedirs(d.tmp, exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        p = subprocess.run([DAEMON], env=d.env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and words in p.stderr, p
    env = dict(d.env, RUNTARA_SETTINGS_FILE=os.path.join(d.tmp, "missing"))
    p = subprocess.run([DAEMON], env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "could not read the settings file" in p.stderr, p
    shutil.rmtree(d.tmp, ignore_errors=True)

def rendered(page):
    """A manual page of the build as man prints it, and groff's warnings about it."""
    p = subprocess.run(["groff", "-man", "-Tutf8", "-ww", os.path.join(BUILD, page)],
                       capture_output=True, text=True, env=dict(os.environ, LC_ALL="C.UTF-8"))
    assert p.returncode == 0, p.stderr
    text = re.sub(r".\x08", "", p.stdout)  # overstrikes (bold, underline)
    return re.sub(r"‐\n\s*", "", text).replace("‐", "-"), p.stderr  # hyphenation


def help_of(binary):
    return subprocess.run([binary, "--help"], capture_output=True, text=True,
                          check=True).stdout


@test
def the_manual_pages_list_every_setting_and_command_and_render_cleanly():
    text, warnings = rendered("runtara-environment.8")
    assert warnings == "", warnings
    settings = re.findall(r"^  ([A-Z][A-Z0-9_]+) ", help_of(DAEMON), re.M)
    assert len(settings) > 40, settings
    for name in settings + ["SIGTERM", "/etc/runtara/environment", "migrate", "EXIT STATUS"]:
        assert name in text, f"runtara-environment(8) does not mention {name}"
    text, warnings = rendered("runtara-ctl.1")
    assert warnings == "", warnings
    for line in help_of(CTL).split("Commands:\n")[1].split("\nOptions:")[0].splitlines():
        words = line.split()
        if words and not words[0].startswith("["):
            assert " ".join(words[:2]) in " ".join(text.split()), \
                f"runtara-ctl(1) does not list {words[:2]}"


def complete(*words):
    """What the bash completion of runtara-ctl offers for the command line words (the last one
    being completed)."""
    script = os.path.join(os.path.dirname(__file__), "..", "..", "packaging", "completion",
                          "runtara-ctl")
    line = " ".join(shlex.quote(w) for w in ("runtara-ctl",) + words)
    p = subprocess.run(["bash", "--norc", "-c", f'source {shlex.quote(script)}; '
                        f'COMP_WORDS=({line}); COMP_CWORD={len(words)}; _runtara_ctl; '
                        'printf "%s\\n" "${COMPREPLY[@]}"'],
                       capture_output=True, text=True, check=True)
    return set(p.stdout.split())


@test
def bash_completes_commands_subcommands_options_and_values():
    assert complete("ins") == {"instances"}
    assert complete("--url", "http://x", "te") == {"tenants"}
    assert complete("tenants", "") == {"metrics"}
    assert complete("tenants", "metrics", "acme", "--gr") == {"--granularity"}
    assert complete("tenants", "metrics", "acme", "--granularity", "") == {"hour", "day"}
    assert complete("instances", "list", "--status", "f") == {"failed"}
    assert complete("instances", "signal", "order-1", "") == {"cancel", "pause", "resume"}
    assert complete("images", "register", "f", "--runner", "") == {"oci", "native"}
    assert "--all" in complete("instances", "events", "order-1", "--")
    # every command and subcommand of the usage is offered
    usage = help_of(CTL).split("Commands:\n")[1].split("\nOptions:")[0]
    for line in usage.splitlines():
        if not line.startswith("  ") or line.startswith("   "):
            continue  # (a continued line)
        words = re.split(r"\s{2,}", line.strip())[0].split()  # (the description set apart)
        assert words[0] in complete(words[0][:2]), words
        if len(words) > 1 and words[1].isalpha() and words[1].islower():
            assert words[1] in complete(words[0], ""), words


if __name__ == "__main__":
    main()
