#!/usr/bin/env python3
"""A fake of the daemon's instance API ("core", docs/instance-api.md) for testing libruntara and
other workflow clients without the daemon. Stdlib only.

It serves HTTP/1.1 on a unix socket (or on TCP) and implements the document: the token check
(401), first-write-wins checkpoints (201 / 200 and the Runtara-Checkpoint header), the
Runtara-Signal header on the replies of register, checkpoints, heartbeat and events, the signals
long poll and ack, events, input, and completed / failed with 409 once the instance has ended. It
records every request (FakeCore.requests) so tests can check what a client sent.

In a test:    core = FakeCore(socket_path).start(); env = core.env(); ...; core.stop()
By hand:      python3 fake_core.py --socket /tmp/core.sock --input '{"name": "ada"}'
              prints the RUNTARA_* variables to export, serves until interrupted, then prints the
              instance's final state (also on SIGTERM)."""
import argparse
import http.server
import json
import os
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

KEY = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
WAIT = re.compile(r"^(\d+(?:\.\d+)?)(ms|s)?$")
ENDED = ("completed", "failed", "cancelled", "stopped", "timed_out")
LIVE = ("pending", "running")
EVENT_TYPES = ("progress", "custom", "log")
EVENT_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_WAIT_S = 60
MAX_PAYLOAD = 64 << 10


class Instance:
    """The daemon's view of one instance."""

    def __init__(self, instance_id="i-1", tenant_id="acme", input=None):
        self.id = instance_id
        self.tenant = tenant_id
        self.input = json.dumps({} if input is None else input).encode()
        self.token = secrets.token_hex(16)
        self.attempt = 1
        self.checkpoint_id = None  # the last key stored
        self.checkpoints = {}
        self.signal = None  # {"type": ..., "payload": ...}
        self.announce = None  # a signal type the replies announce although none is pending
        self.status = "pending"
        self.output = None
        self.error = None
        self.events = []

    def relaunch(self):
        """A new launch of the same instance (after a crash, a resume, or to replay a finished
        one in tests): a new token and attempt; checkpoints, events and input stay."""
        self.attempt += 1
        self.token = secrets.token_hex(16)
        self.status = "pending"
        self.output = self.error = None

    def state(self):
        return {"instance_id": self.id, "tenant_id": self.tenant, "attempt": self.attempt,
                "status": self.status, "checkpoint_id": self.checkpoint_id,
                "checkpoints": sorted(self.checkpoints), "signal": self.signal,
                "output": self.output, "error": self.error, "events": self.events}


class Request:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.path = path
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body
        self.status = None

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.method} {self.path} -> {self.status}>"


class Reply:
    def __init__(self, status, body=b"", ctype=None, headers=None):
        self.status = status
        self.body = body
        self.ctype = ctype
        self.headers = headers or {}


def json_reply(status, doc, headers=None):
    return Reply(status, json.dumps(doc).encode(), "application/json", headers)


def error(status, code, message):
    return json_reply(status, {"error": {"code": code, "message": message}})


class Quiet:
    """A client that goes away mid-request (killed, or cut off by stop()) is not an error."""

    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class UnixServer(Quiet, socketserver.ThreadingUnixStreamServer):
    pass


class TCPServer(Quiet, socketserver.ThreadingTCPServer):
    allow_reuse_address = True


class FakeCore:
    def __init__(self, socket_path=None, tcp=False, instance=None, max_checkpoint=16 << 20,
                 max_output=1 << 20):
        self.socket_path = socket_path
        self.tcp = tcp
        self.instance = instance or Instance()
        self.max_checkpoint = max_checkpoint
        self.max_output = max_output
        self.cond = threading.Condition()
        self.requests = []
        self.conns = set()
        self.connections_accepted = 0
        self.server = None
        self.thread = None
        self.addr = None  # RUNTARA_SERVER_ADDR, once started

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self):
        handler = type("BoundHandler", (Handler,), {"core": self})
        if self.tcp:
            self.server = TCPServer(("127.0.0.1", 0), handler)
            self.addr = "127.0.0.1:%d" % self.server.server_address[1]
        else:
            self.server = UnixServer(self.socket_path, handler)
            self.addr = "unix:" + self.socket_path
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop serving and cut every open connection, as a daemon that went away."""
        if not self.server:
            return
        self.server.shutdown()
        self.server.server_close()
        with self.cond:
            for c in list(self.conns):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.cond.notify_all()
        if self.socket_path and not self.tcp:
            try:
                os.unlink(self.socket_path)
            except FileNotFoundError:
                pass
        self.server = None

    def env(self):
        """The variables the runner injects into a launch of the instance."""
        i = self.instance
        e = {"RUNTARA_INSTANCE_ID": i.id, "RUNTARA_TENANT_ID": i.tenant,
             "RUNTARA_SERVER_ADDR": self.addr, "RUNTARA_INSTANCE_TOKEN": i.token,
             "RUNTARA_ATTEMPT": str(i.attempt),
             # the tests of unreachable daemons want the failure at once; test_sdk.py's
             # test_reconnects_while_the_daemon_restarts sets its own
             "RUNTARA_RECONNECT_SECS": "0"}
        if i.checkpoint_id:
            e["RUNTARA_CHECKPOINT_ID"] = i.checkpoint_id
        return e

    # ---- state for tests -------------------------------------------------------------------

    def set_signal(self, type_, payload=None):
        with self.cond:
            self.instance.signal = None if type_ is None else {"type": type_, "payload": payload}
            self.cond.notify_all()

    def wait_for(self, predicate, timeout=20):
        """Wait until predicate(instance) holds; False on timeout."""
        deadline = time.time() + timeout
        with self.cond:
            while not predicate(self.instance):
                left = deadline - time.time()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True

    def find(self, method=None, path_re=None):
        with self.cond:
            return [r for r in self.requests if (method is None or r.method == method) and
                    (path_re is None or re.search(path_re, r.path))]

    # ---- the API ---------------------------------------------------------------------------

    def handle(self, req):
        m = re.match(r"^/api/v1/instances/([^/?]+)(/[^?]*)?(?:\?(.*))?$", req.path)
        if not m:
            return error(404, "not_found", "no such endpoint")
        inst = self.instance
        if (urllib.parse.unquote(m[1]) != inst.id or
                req.headers.get("authorization") != f"Bearer {inst.token}"):
            r = error(401, "unauthorized", "invalid instance token")
            r.headers["WWW-Authenticate"] = 'Bearer realm="runtara"'
            return r
        sub, query = m[2] or "", urllib.parse.parse_qs(m[3] or "", keep_blank_values=True)
        if sub.startswith("/checkpoints/"):
            return self.checkpoint(req, inst, urllib.parse.unquote(sub[len("/checkpoints/"):]))
        routes = {
            ("POST", "/register"): self.register,
            ("GET", "/input"): self.input,
            ("POST", "/heartbeat"): self.heartbeat,
            ("POST", "/events"): self.event,
            ("POST", "/signals/ack"): self.ack,
            ("POST", "/completed"): self.completed,
            ("POST", "/failed"): self.failed,
        }
        if sub == "/signals" and req.method == "GET":
            return self.signals(req, inst, query)
        fn = routes.get((req.method, sub))
        if fn:
            return fn(req, inst)
        if any(s == sub for _, s in routes):
            return error(405, "method_not_allowed", f"method {req.method} is not allowed here")
        return error(404, "not_found", "no such endpoint")

    def with_signal(self, inst, reply):
        announced = inst.signal["type"] if inst.signal else inst.announce
        if announced and reply.status < 300:
            reply.headers["Runtara-Signal"] = announced
        return reply

    def not_live(self, inst):
        """The daemon's 409 to a process whose instance neither runs nor is being launched."""
        if inst.status in LIVE:
            return None
        return error(409, "conflict",
                     f"instance \"{inst.id}\" is {inst.status}; the process should exit")

    def register(self, req, inst):
        if self.not_live(inst):
            return self.not_live(inst)
        inst.status = "running"
        inst.events.append({"type": "started", "attempt": inst.attempt})
        return self.with_signal(inst, json_reply(200, {
            "instance_id": inst.id, "tenant_id": inst.tenant, "attempt": inst.attempt,
            "checkpoint_id": inst.checkpoint_id, "status": inst.status}))

    def input(self, req, inst):
        return Reply(200, inst.input, "application/json")

    def checkpoint(self, req, inst, key):
        if not KEY.match(key):
            return error(400, "invalid_argument", f"invalid checkpoint key \"{key}\"")
        if req.method == "GET":
            if key not in inst.checkpoints:
                return error(404, "not_found", f"checkpoint \"{key}\" does not exist")
            # Like the daemon, no Runtara-Signal here: only the save announces it.
            return Reply(200, inst.checkpoints[key], "application/octet-stream")
        if req.method != "PUT":
            return error(405, "method_not_allowed", f"method {req.method} is not allowed here")
        if req.headers.get("content-type") != "application/octet-stream":
            return error(415, "unsupported_media_type", "checkpoints are application/octet-stream")
        if self.not_live(inst):
            return self.not_live(inst)
        if len(req.body) > self.max_checkpoint:
            return error(413, "payload_too_large",
                         f"checkpoint is larger than {self.max_checkpoint} bytes")
        if key in inst.checkpoints:
            return self.with_signal(inst, Reply(200, inst.checkpoints[key],
                                                "application/octet-stream",
                                                {"Runtara-Checkpoint": "existing"}))
        inst.checkpoints[key] = req.body
        inst.checkpoint_id = key
        return self.with_signal(inst, Reply(201, req.body, "application/octet-stream",
                                            {"Runtara-Checkpoint": "stored"}))

    def heartbeat(self, req, inst):
        return self.with_signal(inst, Reply(204))

    def json_body(self, req, members):
        """The request's JSON object, or an error Reply; like the daemon, a member not in
        `members` is refused."""
        if req.headers.get("content-type", "").split(";")[0] != "application/json":
            return error(415, "unsupported_media_type", "the body must be application/json")
        try:
            doc = json.loads(req.body)
        except ValueError as e:
            return error(400, "invalid_json", f"invalid JSON: {e}")
        if not isinstance(doc, dict):
            return error(400, "invalid_json", "the body must be a JSON object")
        unknown = sorted(set(doc) - set(members))
        if unknown:
            return error(400, "invalid_argument", f"unknown member \"{unknown[0]}\"")
        return doc

    def event(self, req, inst):
        doc = self.json_body(req, ("type", "subtype", "payload", "key"))
        if isinstance(doc, Reply):
            return doc
        if "key" in doc and not (isinstance(doc["key"], str) and EVENT_KEY.fullmatch(doc["key"])):
            return error(400, "invalid_argument", "invalid key")
        if doc.get("type") not in EVENT_TYPES:
            return error(400, "invalid_argument", "event type must be progress, custom or log")
        if not isinstance(doc.get("subtype", ""), str) or len(doc.get("subtype", "")) > 128:
            return error(400, "invalid_argument", "event subtype must be a string")
        if len(json.dumps(doc.get("payload"))) > MAX_PAYLOAD:
            return error(413, "payload_too_large", "event payload is larger than 64 KiB")
        # a report repeated with its key is recorded once, as the daemon does
        for i, e in enumerate(inst.events):
            if "key" in doc and e.get("key") == doc["key"]:
                return self.with_signal(inst, json_reply(200, {"id": i + 1}))
        inst.events.append(doc)
        return self.with_signal(inst, json_reply(201, {"id": len(inst.events)}))

    def signals(self, req, inst, query):
        wait = query.get("wait", ["0"])[0]
        m = WAIT.match(wait)
        if not m or set(query) - {"wait"}:
            return error(400, "invalid_argument", f"invalid wait \"{wait}\": expected e.g. 30s")
        secs = min(float(m[1]) / (1000 if m[2] == "ms" else 1), MAX_WAIT_S)
        deadline = time.time() + secs
        while inst.signal is None and self.server and time.time() < deadline:
            self.cond.wait(deadline - time.time())
        return json_reply(200, {"signal": inst.signal})

    def ack(self, req, inst):
        doc = self.json_body(req, ("type",))
        if isinstance(doc, Reply):
            return doc
        type_ = doc.get("type")
        if not inst.signal or inst.signal["type"] != type_:
            return error(409, "conflict", f"no \"{type_}\" signal is pending")
        inst.signal = None
        if type_ == "cancel":
            inst.status = "cancelled"
        elif type_ == "pause":
            inst.status = "suspended"
        return Reply(204)

    def end(self, req, inst, status, field, limit, check=None, members=()):
        """The common part of completed and failed: only a running instance ends, and the
        first end wins."""
        doc = self.json_body(req, (field,) + members)
        if isinstance(doc, Reply):
            return doc
        if inst.status in ENDED:
            return error(409, "conflict", f"instance \"{inst.id}\" has already ended "
                                          f"({inst.status})")
        if inst.status != "running":
            return error(409, "conflict", f"instance \"{inst.id}\" is {inst.status}")
        if field not in doc:
            return error(400, "invalid_argument", f"the body has no \"{field}\"")
        if check and not check(doc[field]):
            return error(400, "invalid_argument", f"invalid \"{field}\"")
        if len(json.dumps(doc[field])) > limit:
            return error(413, "payload_too_large", f"{field} is larger than {limit} bytes")
        inst.status = status
        return doc

    def completed(self, req, inst):
        doc = self.end(req, inst, "completed", "output", self.max_output)
        if isinstance(doc, Reply):
            return doc
        inst.output = doc["output"]
        return json_reply(200, {"instance_id": inst.id, "status": inst.status})

    def failed(self, req, inst):
        doc = self.end(req, inst, "failed", "error", self.max_output,
                       check=lambda e: isinstance(e, str) and 0 < len(e.encode()) <= 4096,
                       members=("detail",))
        if isinstance(doc, Reply):
            return doc
        inst.error = {"message": doc["error"], "detail": doc.get("detail")}
        return json_reply(200, {"instance_id": inst.id, "status": inst.status})


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-core"
    core = None  # set by FakeCore.start()

    def setup(self):
        super().setup()
        with self.core.cond:
            self.core.conns.add(self.connection)
            self.core.connections_accepted += 1

    def finish(self):
        with self.core.cond:
            self.core.conns.discard(self.connection)
        super().finish()

    def log_message(self, format, *args):
        pass  # the default needs a client address, which a unix socket does not have

    def serve(self):
        n = int(self.headers.get("Content-Length") or 0)
        req = Request(self.command, self.path, self.headers, self.rfile.read(n) if n else b"")
        with self.core.cond:
            self.core.requests.append(req)
            reply = self.core.handle(req)
            req.status = reply.status
            self.core.cond.notify_all()
        self.send_response(reply.status)
        if reply.ctype:
            self.send_header("Content-Type", reply.ctype)
        for k, v in reply.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if reply.body:
            self.wfile.write(reply.body)

    do_GET = do_PUT = do_POST = do_DELETE = serve


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", help="unix socket path (default: TCP on a free loopback port)")
    p.add_argument("--input", default="{}", help="the instance's input JSON")
    p.add_argument("--instance", default="i-1")
    p.add_argument("--tenant", default="acme")
    a = p.parse_args()
    core = FakeCore(a.socket, tcp=not a.socket,
                    instance=Instance(a.instance, a.tenant, json.loads(a.input))).start()
    for k, v in core.env().items():
        print(f"export {k}={v}", flush=True)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on ^C
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    core.stop()
    json.dump(core.instance.state(), sys.stdout, indent=2, default=repr)
    print()


if __name__ == "__main__":
    main()
