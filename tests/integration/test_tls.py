#!/usr/bin/env python3
"""TLS on the management API: a certificate made here (a test CA and a server certificate for
127.0.0.1 and localhost, with the openssl command); the daemon serves health and metrics over
HTTPS that python's ssl verifies with the CA; a plaintext request to the TLS port fails and the
daemon lives; a non-loopback bind without TLS is refused unless waived; runtara-ctl verifies the
certificate with the CA, fails clearly without it and skips the check with
RUNTARA_SKIP_CERT_VERIFICATION, which instances get only when the daemon has it; bad certificate
or key files stop the start with a message naming the file."""
import http.client
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import warnings

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, main, run_ctl, test  # noqa: E402

_certs = {}


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def certs():
    """Paths of ca (certificate), cert and key (the server's), other_key and other_ca (a CA
    certificate that issued nothing here), enc_key (the server's key, encrypted) and keys (an API
    keys file), made once per run."""
    if _certs:
        return _certs
    d = tempfile.mkdtemp(prefix="runtara-tls-")
    p = {n: os.path.join(d, f) for n, f in (
        ("ca", "ca.pem"), ("ca_key", "ca.key"), ("cert", "server.pem"), ("key", "server.key"),
        ("csr", "server.csr"), ("ext", "server.ext"), ("other_key", "other.key"),
        ("enc_key", "server-enc.key"), ("keys", "api-keys"), ("other_ca", "other-ca.pem"))}
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", p["ca_key"], "-out", p["ca"], "-days", "2",
            "-subj", "/CN=runtara test CA")
    openssl("req", *ec, "-keyout", p["key"], "-out", p["csr"], "-subj", "/CN=localhost")
    with open(p["ext"], "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", p["csr"], "-CA", p["ca"], "-CAkey", p["ca_key"],
            "-CAcreateserial", "-out", p["cert"], "-days", "2", "-extfile", p["ext"])
    openssl("genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-out", p["other_key"])
    openssl("req", "-x509", "-key", p["other_key"], "-out", p["other_ca"], "-days", "2",
            "-subj", "/CN=another CA")
    openssl("pkey", "-in", p["key"], "-out", p["enc_key"], "-aes256", "-passout", "pass:secret")
    for k in ("key", "other_key", "enc_key"):
        os.chmod(p[k], 0o600)
    with open(p["keys"], "w") as f:  # one admin key; health and metrics need none
        f.write("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 admin ops\n")
    _certs.update(p)
    return p


def tls_env(**extra):
    c = certs()
    env = {"RUNTARA_TLS_CERT_FILE": c["cert"], "RUNTARA_TLS_KEY_FILE": c["key"]}
    env.update(extra)
    return env


def verifying_context():
    return ssl.create_default_context(cafile=certs()["ca"])


def tls_daemon(**extra):
    return Daemon(env=tls_env(**extra), ssl_context=verifying_context())


def failed_start(env):
    """Start a daemon that must refuse to start; returns (exit status, its log)."""
    d = Daemon(env=env)
    try:
        d.start(wait=False)
        rc = d.proc.wait(20)
        d.stop()  # collects the process and checks the log for sanitizer reports
        return rc, d.logs()
    finally:
        d.cleanup()


@test
def health_and_metrics_over_https_verified_with_the_ca():
    d = tls_daemon().start()
    try:
        c = d.conn()
        r = d.request("GET", "/api/v1/health", conn=c)
        assert r.status == 200 and r.json()["status"] == "ok", r
        assert c.sock.version() in ("TLSv1.2", "TLSv1.3"), c.sock.version()
        assert r.header("Strict-Transport-Security") is None
        m = d.request("GET", "/metrics", conn=c)  # the same connection, kept alive
        assert m.status == 200 and b"# TYPE" in m.body, m
        c.close()
        d.wait_log(f"listening on https://127.0.0.1:{d.port}")

        # a client that does not trust the test CA refuses the certificate
        c = http.client.HTTPSConnection("127.0.0.1", d.port, timeout=10,
                                        context=ssl.create_default_context())
        try:
            c.request("GET", "/api/v1/health")
            raise AssertionError("a client without the CA accepted the certificate")
        except ssl.SSLCertVerificationError:
            pass

        # the server refuses TLS 1.1 (the client offers it: its security level is lowered)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(certs()["ca"])
            old.set_ciphers("ALL:@SECLEVEL=0")
            old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        try:
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                with old.wrap_socket(s, server_hostname="127.0.0.1"):
                    raise AssertionError("a TLS 1.1 handshake succeeded")
        except ssl.SSLError as e:
            assert "NO_PROTOCOLS_AVAILABLE" not in str(e), e
        assert d.request("GET", "/api/v1/health").status == 200
    finally:
        d.cleanup()


@test
def plaintext_request_to_the_tls_port_fails_and_the_daemon_lives():
    d = tls_daemon().start()
    try:
        for req in (b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00" * 64):
            with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
                s.sendall(req)
                got = b""
                while True:  # the server closes the connection
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                assert not got.startswith(b"HTTP/"), got
        assert d.proc.poll() is None
        assert d.request("GET", "/api/v1/health").status == 200
        assert d.stop() == 0
    finally:
        d.cleanup()


@test
def non_loopback_bind_needs_tls_or_the_waiver():
    keys = certs()["keys"]
    everywhere = {"RUNTARA_ENV_BIND": "0.0.0.0", "RUNTARA_API_KEYS_FILE": keys}
    rc, log = failed_start(everywhere)
    assert rc == 2, (rc, log)
    assert 'refusing to listen on "0.0.0.0" without TLS' in log, log
    assert "hint: set RUNTARA_TLS_CERT_FILE and RUNTARA_TLS_KEY_FILE" in log, log
    assert "RUNTARA_ALLOW_PLAINTEXT_HTTP=true" in log, log

    # open mode (no keys) stays loopback only, TLS or not
    rc, log = failed_start(tls_env(RUNTARA_ENV_BIND="0.0.0.0"))
    assert rc == 2 and 'refusing to listen on "0.0.0.0" without API keys' in log, (rc, log)

    d = Daemon(env=dict(everywhere, RUNTARA_ALLOW_PLAINTEXT_HTTP="true")).start()
    try:
        assert d.request("GET", "/api/v1/health").status == 200
        d.wait_log("RUNTARA_ALLOW_PLAINTEXT_HTTP=true: the management API listens on "
                   '\\"0.0.0.0\\" WITHOUT TLS')
    finally:
        d.cleanup()

    d = tls_daemon(**everywhere).start()
    try:
        assert d.request("GET", "/api/v1/health").status == 200
        assert "WITHOUT TLS" not in d.logs()
    finally:
        d.cleanup()


@test
def ctl_verifies_the_certificate():
    c = certs()
    d = tls_daemon().start()
    plain = Daemon().start()
    try:
        def ctl(*args, **env):
            return run_ctl(d, *args, env={k: v for k, v in env.items()})

        for p in (ctl("health", RUNTARA_CA_FILE=c["ca"]), ctl("--cacert", c["ca"], "health"),
                  ctl("health", "--cacert", c["ca"], "--json")):
            assert p.returncode == 0, p
        p = ctl("health", RUNTARA_CA_FILE=c["ca"])
        assert f"server:      https://127.0.0.1:{d.port}\n" in p.stdout, p.stdout

        # without the CA: a certificate error that says what to do
        p = ctl("health")
        assert p.returncode == 1 and p.stdout == "", p
        assert p.stderr.startswith(f"runtara-ctl: could not verify the certificate of "
                                   f"https://127.0.0.1:{d.port}: "), p.stderr
        assert "hint: name the CA that issued the daemon's certificate with --cacert or " \
               "RUNTARA_CA_FILE" in p.stderr, p.stderr
        # a CA that did not issue it
        p = ctl("health", "--cacert", c["other_ca"])
        assert p.returncode == 1 and "could not verify the certificate" in p.stderr, p

        # RUNTARA_SKIP_CERT_VERIFICATION: the original's truthy spellings skip the check
        for v in ("true", "1", "yes", "on"):
            p = ctl("health", RUNTARA_SKIP_CERT_VERIFICATION=v)
            assert p.returncode == 0, (v, p)
        for v in ("false", "0", "", "TRUE", "maybe"):
            p = ctl("health", RUNTARA_SKIP_CERT_VERIFICATION=v)
            assert p.returncode == 1 and "could not verify" in p.stderr, (v, p)

        # a CA file that cannot be read
        missing = os.path.join(d.tmp, "missing.pem")
        p = ctl("health", "--cacert", missing)
        assert p.returncode == 1, p
        assert f'could not load the CA certificates in "{missing}"' in p.stderr, p.stderr

        # the wrong scheme, either way
        p = run_ctl(d, "health", env={"RUNTARA_URL": f"http://127.0.0.1:{d.port}"})
        assert p.returncode == 1 and "use an https:// URL" in p.stderr, p
        p = run_ctl(plain, "health", env={"RUNTARA_URL": f"https://127.0.0.1:{plain.port}",
                                          "RUNTARA_CA_FILE": c["ca"]})
        assert p.returncode == 1, p
        assert p.stderr.startswith("runtara-ctl: could not make a TLS connection to https://"), p
        assert d.proc.poll() is None and plain.proc.poll() is None
    finally:
        plain.cleanup()
        d.cleanup()


SHOW_SKIP = b"""#!/bin/sh
v=${RUNTARA_SKIP_CERT_VERIFICATION-absent}
printf '{"skip": "%s"}' "$v" > output.json
"""


def instance_sees(d, key=None):
    """What an instance of d sees of RUNTARA_SKIP_CERT_VERIFICATION; a start cannot set it."""
    r = d.upload("acme", "show", SHOW_SKIP, extra="&runner_type=native", key=key)
    assert r.status == 201, r
    img = r.json()["image_id"]
    r = d.request("POST", "/api/v1/instances", key=key, json_body={
        "image_id": img, "env": {"RUNTARA_SKIP_CERT_VERIFICATION": "true"}})
    assert r.status == 400, r
    r = d.request("POST", "/api/v1/instances", key=key, json_body={"image_id": img})
    assert r.status == 201, r
    iid = r.json()["instance_id"]
    while True:  # each request waits for a change, up to 10 s
        inst = d.request("GET", f"/api/v1/instances/{iid}?wait=10s", key=key).json()
        if inst["status"] in ("completed", "failed"):
            break
    assert inst["status"] == "completed", inst
    return inst["output"]["skip"]


@test
def instances_get_skip_cert_verification_only_when_the_daemon_has_it():
    for env, want in (({"RUNTARA_SKIP_CERT_VERIFICATION": "yes"}, "true"),
                      ({"RUNTARA_SKIP_CERT_VERIFICATION": "false"}, "absent"), ({}, "absent")):
        d = tls_daemon(**env).start()
        try:
            assert instance_sees(d) == want, env
        finally:
            d.cleanup()


@test
def bad_certificate_or_key_files_stop_the_start():
    c = certs()
    garbage = os.path.join(os.path.dirname(c["cert"]), "garbage.pem")
    with open(garbage, "w") as f:
        f.write("not a certificate\n")
    missing = os.path.join(os.path.dirname(c["cert"]), "missing.pem")
    cases = [
        (tls_env(RUNTARA_TLS_CERT_FILE=missing), 1,
         f'could not read the TLS certificate file \\"{missing}\\" (RUNTARA_TLS_CERT_FILE): '
         "No such file or directory"),
        (tls_env(RUNTARA_TLS_KEY_FILE=missing), 1,
         f'could not read the TLS private key file \\"{missing}\\" (RUNTARA_TLS_KEY_FILE)'),
        (tls_env(RUNTARA_TLS_CERT_FILE=garbage), 1,
         f'could not load the TLS certificate file \\"{garbage}\\" (RUNTARA_TLS_CERT_FILE)'),
        (tls_env(RUNTARA_TLS_KEY_FILE=c["cert"]), 1,
         "could not load the TLS private key file"),
        (tls_env(RUNTARA_TLS_KEY_FILE=c["enc_key"]), 1, "the key is encrypted"),
        (tls_env(RUNTARA_TLS_KEY_FILE=c["other_key"]), 1,
         f'the TLS private key in \\"{c["other_key"]}\\" does not belong to the certificate in '
         f'\\"{c["cert"]}\\". hint: '),
        (tls_env(RUNTARA_TLS_KEY_FILE=None), 2,
         "RUNTARA_TLS_CERT_FILE is set but RUNTARA_TLS_KEY_FILE is not"),
        (tls_env(RUNTARA_TLS_CERT_FILE=None), 2,
         "RUNTARA_TLS_KEY_FILE is set but RUNTARA_TLS_CERT_FILE is not"),
    ]
    for env, want_rc, want in cases:
        rc, log = failed_start(env)
        assert rc == want_rc and want in log, (env, rc, want, log)
        assert "Traceback" not in log and "listening on" not in log, log


if __name__ == "__main__":
    main()
