#!/usr/bin/env python3
"""The OpenAPI contracts against the real daemon: docs/openapi.yaml (the management API) and
docs/instance-api.yaml (the instance API that workflow programs call on the unix socket). Every
response of a set of real requests must be documented for its path, method and status, carry a
documented media type, have a body that validates against the documented schema and carry the
documented required headers; the JSON bodies and query parameters of the successful requests
must be allowed by the document too. Every documented operation and status must be exercised,
and every route of the daemon's two route tables must be documented in its document, so an
endpoint can neither go undocumented nor untested.

The instance scenarios run real instances of small shell workflows under the native runner: one
that does its work with curl over the unix socket, and one that writes its RUNTARA_ variables
(its launch token among them) to a file and sleeps, so that the test can call every route of the
instance API itself while the process is alive."""
import glob
import hashlib
import http.client
import json
import os
import re
import socket
import sys
import threading
import time
import urllib.parse

import jsonschema
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, Response, error_of, main, test, deadline_in  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "../../docs/openapi.yaml")
CORE_SPEC_PATH = os.path.join(HERE, "../../docs/instance-api.yaml")
SRC_API = os.path.join(HERE, "../../src/api")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# Documented statuses that no test here can provoke: store or disk failures, a full disk, a
# store that does not answer. Each must still be documented where listed.
UNREACHABLE = {
    ("getHealth", "503"),
    # a draining daemon (test_recovery.py drains one)
    ("startInstance", "503"), ("resumeInstance", "503"),
    ("registerImage", "500"), ("registerImage", "507"),
    ("listImages", "500"),
    ("getImage", "500"),
    ("deleteImage", "500"), ("deleteImage", "507"),
    ("startInstance", "500"), ("startInstance", "507"),
    ("listInstances", "500"),
    ("getInstance", "500"),
    ("stopInstance", "500"),
    ("resumeInstance", "500"), ("resumeInstance", "507"),
    ("signalInstance", "500"), ("signalInstance", "507"),
    ("sendCustomSignal", "500"), ("sendCustomSignal", "507"),
    ("listCheckpoints", "500"),
    ("getCheckpoint", "500"),
    ("listEvents", "500"),
    ("getLogs", "500"),
    ("getTenantMetrics", "500"),
    ("listDaemons", "500"),
}
CORE_UNREACHABLE = {
    ("register", "500"),
    ("getInput", "500"),
    ("saveCheckpoint", "500"), ("saveCheckpoint", "507"),
    ("readCheckpoint", "500"),
    ("heartbeat", "500"), ("heartbeat", "507"),
    ("appendEvent", "500"), ("appendEvent", "507"),
    ("pollSignal", "500"),
    ("ackSignal", "500"), ("ackSignal", "507"),
    ("reportCompleted", "500"), ("reportCompleted", "507"),
    ("reportFailed", "500"), ("reportFailed", "507"),
    ("sleep", "500"), ("sleep", "507"),
    ("waitForSignal", "500"), ("waitForSignal", "507"),
}

PROG = b"\x7fELF" + os.urandom(3000)
LIMIT = 16 << 10  # RUNTARA_MAX_IMAGE_SIZE of the daemon with keys

# The instance daemons: SIGKILL at once on a stop or after a reported end, and small limits so
# that the 413s need small bodies.
JSON_LIMIT = 128 << 10
OUTPUT_LIMIT = 1 << 10
CHECKPOINT_LIMIT = 4 << 10
INSTANCE_ENV = {"RUNTARA_STOP_GRACE_SECS": "0", "RUNTARA_MAX_JSON_BODY": str(JSON_LIMIT),
                "RUNTARA_MAX_OUTPUT_SIZE": str(OUTPUT_LIMIT),
                "RUNTARA_MAX_CHECKPOINT_SIZE": str(CHECKPOINT_LIMIT)}

# A workflow that does its work over the instance API with curl (docs/instance-api.md): greets
# the input's name, saves the greeting as a checkpoint, records an event and completes.
GREET = rb"""#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&4)"  # its pipe (RUNTARA_INSTANCE_TOKEN_FD)
set -eu
sock=${RUNTARA_SERVER_ADDR#unix:}
api() { curl -sf --unix-socket "$sock" -H "Authorization: Bearer $RUNTARA_INSTANCE_TOKEN" \
        "http://runtara/api/v1/instances/$RUNTARA_INSTANCE_ID$@"; }
api /register -X POST >/dev/null
name=$(api /input | sed -n 's/.*"name" *: *"\([^"]*\)".*/\1/p')
greeting=$(api /checkpoints/greet -X PUT -H 'Content-Type: application/octet-stream' \
           --data-binary "hello $name")
api /events -X POST -H 'Content-Type: application/json' \
    -d '{"type": "progress", "subtype": "greet", "payload": {"percent": 100}}' >/dev/null
echo "greeted $name" >&2
api /completed -X POST -H 'Content-Type: application/json' \
    -d "{\"output\": {\"greeting\": \"$greeting\"}}" >/dev/null
"""

# A workflow that hands its launch to the test: its RUNTARA_ variables go to
# $OUT/<instance>.<attempt> (renamed into place, so the file is whole), then it sleeps until it
# is stopped.
HANDOVER = b"""#!/bin/sh
export RUNTARA_INSTANCE_TOKEN="$(cat <&4)"  # its pipe (RUNTARA_INSTANCE_TOKEN_FD)
f="$OUT/$RUNTARA_INSTANCE_ID.$RUNTARA_ATTEMPT"
env | grep '^RUNTARA_' > "$f.tmp"
mv "$f.tmp" "$f"
exec sleep 30
"""


class Nonconformance(AssertionError):
    pass


def load_spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


class Contract:
    """Checks responses against the document and records what was exercised."""

    def __init__(self, spec, name="docs/openapi.yaml"):
        self.spec = spec
        self.name = name
        self.seen = set()  # (operationId, status)
        self.templates = []
        for tpl in spec["paths"]:
            rx = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(tpl)) + "$"
            # literal paths before templated ones, so /a/b beats /a/{x}
            self.templates.append((tpl.count("{"), tpl, re.compile(rx)))
        self.templates.sort()

    def resolve(self, obj):
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            if not ref.startswith("#/"):
                raise ValueError(f"only local references are supported: {ref}")
            target = self.spec
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            obj = target
        return obj

    def validator(self, schema):
        """A Draft 2020-12 validator in which "#/components/..." resolves into this document:
        the schema is wrapped in a root that also holds the document's components."""
        root = dict(schema)
        root["components"] = self.spec["components"]
        return jsonschema.Draft202012Validator(root, format_checker=jsonschema.FormatChecker())

    def validate(self, value, schema, what):
        errors = sorted(self.validator(schema).iter_errors(value), key=lambda e: list(e.path))
        if errors:
            msgs = "; ".join(f"{'/'.join(map(str, e.path)) or '(root)'}: {e.message}"
                             for e in errors[:5])
            raise Nonconformance(f"{what} does not match the documented schema: {msgs}")

    def template_of(self, path):
        path = path.split("?", 1)[0]
        for _, tpl, rx in self.templates:
            if rx.match(path):
                return tpl
        return None

    def operation(self, method, path):
        tpl = self.template_of(path)
        if tpl is None:
            raise Nonconformance(f"{path} matches no documented path")
        op = self.spec["paths"][tpl].get(method.lower())
        if op is None:
            raise Nonconformance(f"{method} {tpl} is not documented")
        return tpl, op

    def parameters(self, tpl, op):
        """The parameters of an operation: its path item's, overridden by its own."""
        params = {}
        for p in (self.spec["paths"][tpl].get("parameters") or []) + (op.get("parameters") or []):
            p = self.resolve(p)
            params[(p["name"], p["in"])] = p
        return params

    def check_request(self, method, path, json_body=None):
        """A request the daemon accepted must be one the document allows: every query parameter
        documented and valid, and a JSON body valid against the documented request body."""
        tpl, op = self.operation(method, path)
        where = f"{method} {path}"
        params = self.parameters(tpl, op)
        query = urllib.parse.urlsplit(path).query
        for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
            p = params.get((name, "query"))
            if p is None:
                raise Nonconformance(f"{where}: the query parameter {name} is not documented")
            schema = p.get("schema", {})
            if self.resolve(schema).get("type") == "array":  # a repeated parameter: one item
                schema = self.resolve(schema)["items"]
            if self.resolve(schema).get("type") == "integer":
                if not re.fullmatch(r"-?[0-9]+", value):
                    raise Nonconformance(f"{where}: query parameter {name} is not an integer")
                value = int(value)
            self.validate(value, schema, f"{where}: query parameter {name}")
        if json_body is not None:
            media = ((op.get("requestBody") or {}).get("content") or {}).get("application/json")
            if media is None:
                raise Nonconformance(f"{where}: no JSON request body is documented")
            self.validate(json_body, media["schema"], f"{where}: request body")

    def check(self, method, path, resp):
        """Check one response; returns the parsed JSON body (or the text, or None)."""
        tpl, op = self.operation(method, path)
        where = f"{method} {path} -> {resp.status}"
        status = str(resp.status)
        responses = op["responses"]
        doc = responses.get(status) or responses.get(status[0] + "XX")
        if doc is None:
            raise Nonconformance(f"{where}: status {status} is not documented for "
                                 f"{op['operationId']} (documented: {sorted(responses)}); "
                                 f"body {resp.body[:300]!r}")
        doc = self.resolve(doc)

        for name, h in (doc.get("headers") or {}).items():
            h = self.resolve(h)
            value = resp.header(name)
            if value is None:
                if h.get("required"):
                    raise Nonconformance(f"{where}: the required header {name} is missing")
                continue
            if "schema" in h:
                self.validate(value, h["schema"], f"{where}: header {name}")

        content = doc.get("content") or {}
        ctype = resp.header("Content-Type")
        if not content:
            if resp.body:
                raise Nonconformance(f"{where}: documented without a body, got "
                                     f"{ctype} {resp.body[:200]!r}")
            body = None
        else:
            if ctype is None:
                raise Nonconformance(f"{where}: no Content-Type (documented: {sorted(content)})")
            essence = ctype.split(";", 1)[0].strip().lower()
            media = next((v for k, v in content.items()
                          if k.split(";", 1)[0].strip().lower() == essence), None)
            if media is None:
                raise Nonconformance(f"{where}: Content-Type {ctype} is not documented "
                                     f"(documented: {sorted(content)})")
            if essence == "application/json" or essence.endswith("+json"):
                try:
                    body = resp.json()
                except ValueError as e:
                    raise Nonconformance(f"{where}: the body is not JSON: {e}") from None
            elif essence.startswith("text/"):
                body = resp.body.decode("utf-8")
            else:
                body = resp.body
            if "schema" in media and not isinstance(body, bytes):
                self.validate(body, media["schema"], f"{where}: body")
        self.seen.add((op["operationId"], status))
        return body

    def operations(self):
        """(path template, method, operation) of every documented operation."""
        for tpl, item in self.spec["paths"].items():
            for m in METHODS:
                if m in item:
                    yield tpl, m.upper(), item[m]


def load_core_spec():
    with open(CORE_SPEC_PATH) as f:
        return yaml.safe_load(f)


SPEC = load_spec()
CONTRACT = Contract(SPEC)
CORE = Contract(load_core_spec(), "docs/instance-api.yaml")


def call(d, method, path, expect, **kw):
    """A request whose response must conform and have status `expect`."""
    r = d.request(method, path, **kw)
    body = CONTRACT.check(method, path, r)
    assert r.status == expect, f"{method} {path}: expected {expect}, got {r!r}"
    if r.status >= 400:
        error_of(r)
    else:
        CONTRACT.check_request(method, path, kw.get("json_body"))
    return r, body


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a connected AF_UNIX socket: the instance API's transport."""

    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self.socket_path)
        except OSError:
            s.close()
            raise
        self.sock = s


class Launch:
    """One launch of an instance, as its program sees it: the RUNTARA_ variables."""

    def __init__(self, env):
        self.env = env
        self.id = env["RUNTARA_INSTANCE_ID"]
        self.token = env["RUNTARA_INSTANCE_TOKEN"]
        self.attempt = int(env["RUNTARA_ATTEMPT"])
        addr = env["RUNTARA_SERVER_ADDR"]
        assert addr.startswith("unix:"), addr
        self.socket = addr[len("unix:"):]

    def request(self, method, path, body=None, headers=None, token=None, json_body=None,
                instance=None):
        """A request to the instance API; path is relative to /api/v1/instances/<id>. token:
        this launch's unless given ("" for none)."""
        headers = dict(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers.setdefault("Content-Type", "application/json")
        token = self.token if token is None else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        full = f"/api/v1/instances/{instance or self.id}{path}"
        c = UnixHTTPConnection(self.socket)
        try:
            try:
                c.request(method, full, body=body, headers=headers)
            except BrokenPipeError:
                # A body refused by its Content-Length is answered before it is read, and the
                # connection closed: on a unix socket the rest of the body then meets EPIPE,
                # but the response is there to read.
                pass
            r = c.getresponse()
            return full, Response(r.status, r.getheaders(), r.read())
        finally:
            c.close()

    def call(self, method, path, expect, **kw):
        """An instance API request whose response must conform and have status `expect`."""
        full, r = self.request(method, path, **kw)
        body = CORE.check(method, full, r)
        assert r.status == expect, f"{method} {full}: expected {expect}, got {r!r}"
        if r.status >= 400:
            error_of(r)
        else:
            CORE.check_request(method, full, kw.get("json_body"))
        return r, body


def upload(d, query, data, expect, key=None, ctype="application/octet-stream", headers=None):
    h = {"Content-Type": ctype} if ctype else {}
    h.update(headers or {})
    return call(d, "POST", "/api/v1/images" + query, expect, body=data, headers=h, key=key)


def make_keys(d, **roles):
    """A keys file with one key per role ("admin" or "tenant:<id>"); returns name -> key."""
    keys, lines = {}, []
    for name, role in roles.items():
        key = "rtk_" + os.urandom(24).hex()
        keys[name] = key
        lines.append(f"{hashlib.sha256(key.encode()).hexdigest()} {role} {name}")
    path = os.path.join(d.tmp, "keys")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    d.env["RUNTARA_API_KEYS_FILE"] = path
    return keys


# ---- scenarios: each runs once; the coverage test runs those a filtered run skipped ----------

_ran = set()
_scenarios = []


def scenario(fn):
    def run():
        _ran.add(fn.__name__)
        fn()
    run.__name__ = fn.__name__
    _scenarios.append(run)
    return test(run)


@test
def the_checker_rejects_what_the_document_does_not_allow():
    """Each assertion of the checker can fail: feed it responses that break the contract."""
    def resp(status, body, ctype="application/json", **headers):
        hs = [("X-Request-Id", "abc123")] + list(headers.items())
        if ctype:
            hs.append(("Content-Type", ctype))
        return Response(status, hs, body if isinstance(body, bytes) else body.encode())

    img = ('{"image_id":"05fcc92b-44d9-43af-932f-8ceccff07a90","tenant_id":"acme","name":"hello",'
           '"version":1,"description":null,"runner_type":"oci","labels":{"a":"b"},'
           '"size_bytes":100,"sha256":"' + "ab" * 32 + '","created_at":"2026-11-23T11:55:01.485Z"}')
    loc = {"Location": "/api/v1/images/05fcc92b-44d9-43af-932f-8ceccff07a90"}
    c = Contract(SPEC)
    c.check("POST", "/api/v1/images?name=x", resp(201, img, **loc))  # the baseline passes
    c.check("GET", "/api/v1/images/x", resp(404, '{"error":{"code":"not_found","message":"m"}}'))
    bad = [
        ("POST", "/api/v1/images", resp(201, img.replace('"version":1', '"version":0'), **loc)),
        ("POST", "/api/v1/images", resp(201, img.replace('"labels"', '"extra":1,"labels"'), **loc)),
        ("POST", "/api/v1/images", resp(201, img.replace('"sha256":"ab', '"sha256":"AB'), **loc)),
        ("POST", "/api/v1/images", resp(201, img.replace('"oci"', '"x"'), **loc)),
        ("POST", "/api/v1/images", resp(201, img.replace('"description":null,', ''), **loc)),
        ("POST", "/api/v1/images", resp(201, img)),  # no Location
        ("POST", "/api/v1/images", resp(201, img, **{"Location": "/elsewhere"})),
        ("POST", "/api/v1/images", resp(201, img, ctype="text/html", **loc)),
        ("POST", "/api/v1/images", resp(201, img, ctype=None, **loc)),
        ("POST", "/api/v1/images", resp(201, img[:-1], **loc)),  # not JSON
        ("GET", "/api/v1/images", resp(200, '{"images":[' + img + ']}')),  # no next_cursor
        ("GET", "/api/v1/images", resp(200, '{"images":[{}],"next_cursor":null}')),
        ("GET", "/api/v1/health", resp(418, "{}")),  # undocumented status
        ("GET", "/api/v1/health", resp(200, '{"status":"fine","version":"1","uptime_ms":1,'
                                            '"store":{"backend":"sqlite","status":"ok",'
                                            '"schema_version":1}}')),
        ("GET", "/api/v1/images/x", resp(404, '{"error":{"code":"forbidden","message":"m"}}')),
        ("GET", "/api/v1/images/x", resp(404, '{"error":{"code":"not_found"}}')),
        ("GET", "/api/v1/images/x", resp(404, '{"error":{"code":"not_found","message":"m"},'
                                              '"x":1}')),
        ("GET", "/api/v1/images", resp(401, '{"error":{"code":"unauthorized","message":"m"}}')),
        ("DELETE", "/api/v1/images/x", resp(204, b"oops", ctype=None)),
        ("PUT", "/api/v1/images", resp(200, "{}")),  # undocumented method
        ("GET", "/api/v1/nothing", resp(200, "{}")),  # undocumented path
    ]
    bad.append(("GET", "/api/v1/health", Response(200, [("Content-Type", "application/json")],
                                                  b'{"status":"ok"}')))  # no X-Request-Id
    for method, path, r in bad:
        try:
            c.check(method, path, r)
        except Nonconformance:
            continue
        raise AssertionError(f"the checker accepted {method} {path} {r!r} {r.headers}")
    assert c.seen == {("registerImage", "201"), ("getImage", "404")}, c.seen

    # the instance API: its headers, and its bodies
    core = Contract(CORE.spec, CORE.name)
    cp = "/api/v1/instances/i1/checkpoints/k1"
    core.check("PUT", cp, resp(201, b"abc", ctype="application/octet-stream",
                               **{"Runtara-Checkpoint": "stored"}))  # the baseline passes
    core.check("POST", "/api/v1/instances/i1/heartbeat", resp(204, b"", ctype=None,
                                                              **{"Runtara-Signal": "pause"}))
    bad = [
        ("PUT", cp, resp(201, b"abc", ctype="application/octet-stream")),  # no Runtara-Checkpoint
        ("PUT", cp, resp(201, b"abc", ctype="application/octet-stream",
                         **{"Runtara-Checkpoint": "existing"})),
        ("POST", "/api/v1/instances/i1/heartbeat", resp(204, b"", ctype=None,
                                                        **{"Runtara-Signal": "stop"})),
        ("GET", "/api/v1/instances/i1/signals", resp(200, '{"signal":{"type":"pause"}}')),
        ("POST", "/api/v1/instances/i1/completed", resp(200, '{"status":"running"}')),
        ("POST", "/api/v1/instances/i1/register", resp(403, '{"error":{"code":"forbidden",'
                                                            '"message":"m"}}')),
        ("DELETE", "/api/v1/instances/i1", resp(204, b"", ctype=None)),
    ]
    for method, path, r in bad:
        try:
            core.check(method, path, r)
        except Nonconformance:
            continue
        raise AssertionError(f"the checker accepted {method} {path} {r!r} {r.headers}")

    # requests: undocumented or invalid query parameters and bodies
    c.check_request("GET", "/api/v1/instances?status=running&limit=5")
    c.check_request("POST", "/api/v1/instances", {"image": "w", "input": [1]})
    for method, path, body in (("GET", "/api/v1/instances?foo=1", None),
                               ("GET", "/api/v1/instances?limit=x", None),
                               ("GET", "/api/v1/instances?status=sleeping", None),
                               ("POST", "/api/v1/instances", {"image": "w", "extra": 1}),
                               ("POST", "/api/v1/instances", {"input": 1}),
                               ("POST", "/api/v1/instances/x/signals", {"type": "stop"}),
                               ("POST", "/api/v1/instances/x/resume", {})):
        try:
            c.check_request(method, path, body)
        except Nonconformance:
            continue
        raise AssertionError(f"the checker accepted the request {method} {path} {body}")


@test
def the_documented_examples_match_their_schemas():
    n = 0
    for contract in (CONTRACT, CORE):
        for tpl, method, op in contract.operations():
            media_types = [(f"response {status}", contract.resolve(doc).get("content") or {})
                           for status, doc in op["responses"].items()]
            media_types.append(("request", (op.get("requestBody") or {}).get("content") or {}))
            for what, content in media_types:
                for ctype, media in content.items():
                    if "example" in media and "schema" in media and "json" in ctype:
                        contract.validate(media["example"], media["schema"],
                                          f"{contract.name}: example of {method} {tpl} {what}")
                        n += 1
    assert n >= 40, n


@scenario
def open_daemon_images_health_and_metrics():
    d = Daemon().start()
    try:
        r, h = call(d, "GET", "/api/v1/health", 200)
        assert h["status"] == "ok" and h["store"]["status"] == "ok", h
        r, text = call(d, "GET", "/metrics", 200)
        assert "# TYPE runtara_images gauge" in text, text[:500]

        # registration: every query parameter, a client request id kept
        digest = hashlib.sha256(PROG).hexdigest()
        r, img = upload(d, f"?tenant_id=acme&name=hello&description=first%20one&runner_type=native"
                        f"&label=team=core&label=tier=gold&sha256={digest}", PROG, 201,
                        headers={"X-Request-Id": "oa-trace-1"})
        assert r.header("X-Request-Id") == "oa-trace-1", r.headers
        assert r.header("Location") == f"/api/v1/images/{img['image_id']}"
        assert img["version"] == 1 and img["labels"] == {"team": "core", "tier": "gold"}, img
        assert img["sha256"] == digest and img["size_bytes"] == len(PROG), img
        r, v2 = upload(d, "?tenant_id=acme&name=hello", PROG + b"2", 201)
        assert v2["version"] == 2 and v2["description"] is None and v2["runner_type"] == "native"
        r, other = upload(d, "?tenant_id=beta&name=hello-world", PROG, 201)

        # list: filters and pagination
        r, page = call(d, "GET", "/api/v1/images", 200)
        assert [i["image_id"] for i in page["images"]] == \
            [other["image_id"], v2["image_id"], img["image_id"]], page
        assert page["next_cursor"] is None
        r, p1 = call(d, "GET", "/api/v1/images?tenant_id=acme&name=hello&limit=1", 200)
        assert p1["images"] == [v2] and isinstance(p1["next_cursor"], str), p1
        r, p2 = call(d, "GET", f"/api/v1/images?tenant_id=acme&name=hello&limit=1"
                     f"&cursor={p1['next_cursor']}", 200)
        assert p2["images"] == [img], p2
        r, p = call(d, "GET", "/api/v1/images?name_prefix=hello-", 200)
        assert p == {"images": [other], "next_cursor": None}, p

        r, got = call(d, "GET", f"/api/v1/images/{img['image_id']}", 200)
        assert got == img, got

        # 400: every kind of bad input the contract names
        for q in ("?foo=1", "?limit=0", "?limit=1001", "?limit=x", "?cursor=x", "?cursor=0",
                  "?tenant_id=..", "?name_prefix=" + "a" * 129):
            call(d, "GET", "/api/v1/images" + q, 400)
        for q in ("", "?name=x", "?tenant_id=acme", "?tenant_id=acme&name=..",
                  "?tenant_id=acme&name=x&runner_type=docker", "?tenant_id=acme&name=x&label=noeq",
                  "?tenant_id=acme&name=x&sha256=ABC", "?tenant_id=acme&name=x&bogus=1",
                  "?tenant_id=acme&name=x&sha256=" + "0" * 64):
            upload(d, q, PROG, 400)
        upload(d, "?tenant_id=acme&name=x", b"", 400)  # empty
        for bad in ("a..b", "-x", "%00"):
            call(d, "GET", f"/api/v1/images/{bad}", 400)
            call(d, "DELETE", f"/api/v1/images/{bad}", 400)
        call(d, "GET", f"/api/v1/images/{img['image_id']}?x=1", 400)
        call(d, "DELETE", f"/api/v1/images/{img['image_id']}?x=1", 400)

        # 415: not application/octet-stream
        upload(d, "?tenant_id=acme&name=x", PROG, 415, ctype="text/plain")
        upload(d, "?tenant_id=acme&name=x", PROG, 415, ctype=None)

        # 409: an unfinished instance uses the image
        d.edit_store("INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, "
                     "status, created_at) VALUES ('acme/oa-i1', 'oa-i1', 'acme', ?, 'suspended', "
                     "0)", img["image_id"])
        call(d, "DELETE", f"/api/v1/images/{img['image_id']}", 409)
        d.edit_store("UPDATE instances SET status = 'completed'")

        # 204, then 404 for the deleted image
        call(d, "DELETE", f"/api/v1/images/{img['image_id']}", 204)
        call(d, "GET", f"/api/v1/images/{img['image_id']}", 404)
        call(d, "DELETE", f"/api/v1/images/{img['image_id']}", 404)

        # outside the documented operations: the same error body, a request id
        for method, path, status, code in (("PUT", "/api/v1/images", 405, "method_not_allowed"),
                                           ("PATCH", "/api/v1/images/x", 405,
                                            "method_not_allowed"),
                                           ("POST", "/metrics", 405, "method_not_allowed"),
                                           ("GET", "/api/v1/nothing", 404, "not_found"),
                                           ("GET", "/api/v1/images/a/b", 404, "not_found")):
            r = d.request(method, path)
            assert r.status == status, (method, path, r)
            assert r.header("X-Request-Id"), r.headers
            assert r.header("Content-Type") == "application/json", r.headers
            CONTRACT.validate(r.json(), {"$ref": "#/components/schemas/Error"}, f"{method} {path}")
            assert error_of(r)["code"] == code, r
    finally:
        d.cleanup()


@scenario
def keys_tenants_and_the_size_limit():
    d = Daemon(env={"RUNTARA_MAX_IMAGE_SIZE": str(LIMIT)})
    keys = make_keys(d, ops="admin", acme="tenant:acme")
    d.start()
    try:
        # public operations need no key, even a wrong one is not looked at
        call(d, "GET", "/api/v1/health", 200)
        call(d, "GET", "/metrics", 200, key="rtk_" + "0" * 48)

        r, theirs = upload(d, "?tenant_id=beta&name=w", PROG, 201, key=keys["ops"])
        r, mine = upload(d, "?name=w", PROG, 201, key=keys["acme"])  # tenant from the key
        assert mine["tenant_id"] == "acme", mine

        # 401 on every operation that needs a key: none, and an unknown one
        for key in (None, "rtk_" + "0" * 48):
            for method, path in (("GET", "/api/v1/images"),
                                 ("GET", f"/api/v1/images/{mine['image_id']}"),
                                 ("DELETE", f"/api/v1/images/{mine['image_id']}")):
                r, _ = call(d, method, path, 401, key=key)
                assert r.header("WWW-Authenticate"), r.headers
            r, _ = upload(d, "?tenant_id=acme&name=w", PROG, 401, key=key)
            assert r.header("WWW-Authenticate"), r.headers

        # the console's files need no key, and a known ETag gets 304
        r, page = call(d, "GET", "/ui", 200)
        assert '<script src="/ui/app.js" defer></script>' in page, page
        r, _ = call(d, "GET", "/ui/app.js", 200)
        call(d, "GET", "/ui/app.js", 304, headers={"If-None-Match": r.header("ETag")})
        call(d, "GET", "/ui", 304, key="rtk_" + "0" * 48,
             headers={"If-None-Match": call(d, "GET", "/ui", 200)[0].header("ETag")})
        call(d, "GET", "/ui/style.css", 200)
        call(d, "GET", "/ui/nope.js", 404)

        # tenant metrics: its own tenant, and refused another's
        r, m = call(d, "GET", "/api/v1/tenants/acme/metrics?granularity=day", 200,
                    key=keys["acme"])
        assert m["tenant_id"] == "acme" and len(m["buckets"]) in (1, 2), m
        call(d, "GET", "/api/v1/tenants/beta/metrics", 403, key=keys["acme"])
        call(d, "GET", "/api/v1/tenants/acme/metrics", 401)
        call(d, "GET", "/api/v1/tenants/acme/metrics?granularity=week", 400, key=keys["ops"])

        # 403: a tenant key acting for another tenant
        call(d, "GET", "/api/v1/images?tenant_id=beta", 403, key=keys["acme"])
        upload(d, "?tenant_id=beta&name=w", PROG, 403, key=keys["acme"])

        # another tenant's image is a 404, exactly like a missing one
        r, lst = call(d, "GET", "/api/v1/images", 200, key=keys["acme"])
        assert lst["images"] == [mine], lst
        call(d, "GET", f"/api/v1/images/{theirs['image_id']}", 404, key=keys["acme"])
        call(d, "DELETE", f"/api/v1/images/{theirs['image_id']}", 404, key=keys["acme"])
        call(d, "GET", f"/api/v1/images/{theirs['image_id']}", 200, key=keys["ops"])

        # the daemons: this one, live, for an admin key only
        r, ds = call(d, "GET", "/api/v1/daemons", 200, key=keys["ops"])
        assert [(x["self"], x["live"]) for x in ds["daemons"]] == [(True, True)], ds
        call(d, "GET", "/api/v1/daemons", 403, key=keys["acme"])
        call(d, "GET", "/api/v1/daemons", 401)
        call(d, "GET", "/api/v1/daemons?all=1", 400, key=keys["ops"])

        # the backup: every tenant's data, so an admin key only
        call(d, "GET", "/api/v1/backup", 401)
        call(d, "GET", "/api/v1/backup", 403, key=keys["acme"])
        r, _ = call(d, "GET", "/api/v1/backup", 200, key=keys["ops"])
        assert r.body[:16] == b"SQLite format 3\0", r.body[:16]

        # 413: announced by Content-Length, and crossed by a chunked body
        upload(d, "?name=big", b"\0" * (LIMIT + 1), 413, key=keys["acme"])
        upload(d, "?name=big", iter([b"\0" * 4096] * (LIMIT // 4096 + 1)), 413, key=keys["acme"])
        r, ok = upload(d, "?name=big", iter([b"\1" * 4096] * (LIMIT // 4096)), 201,
                       key=keys["acme"])  # exactly the limit, chunked
        assert ok["size_bytes"] == LIMIT, ok

        call(d, "DELETE", f"/api/v1/images/{mine['image_id']}", 204, key=keys["acme"])
    finally:
        d.cleanup()


@scenario
def a_postgres_store_has_no_backup_here():
    """On PostgreSQL the backup is pg_dump's job: 501, naming it (tests/integration/pg.py)."""
    import pg
    d = Daemon(env={"RUNTARA_DATABASE_URL": pg.fresh_database()})
    keys = make_keys(d, ops="admin")
    d.start()
    try:
        r, body = call(d, "GET", "/api/v1/backup", 501, key=keys["ops"])
        assert "pg_dump" in body["error"]["message"], body
        assert not [f for f in os.listdir(d.data_dir) if f.startswith(".backup")], \
            os.listdir(d.data_dir)
    finally:
        d.cleanup()


# ---- instances -------------------------------------------------------------------------------

def native_image(d, tenant, name, prog, key=None):
    r, img = upload(d, f"?tenant_id={tenant}&name={name}&runner_type=native", prog, 201, key=key)
    return img["image_id"]


def poll(what, fn, timeout=20):
    """Call fn every 20 ms until it returns a true value; returns it."""
    deadline = deadline_in(timeout)
    while True:
        v = fn()
        if v:
            return v
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def get_instance(d, iid, key=None):
    return call(d, "GET", f"/api/v1/instances/{iid}", 200, key=key)[1]


def launched(d, out, iid, attempt, key=None):
    """Wait for attempt `attempt` of a HANDOVER instance to be running; its Launch."""
    path = os.path.join(out, f"{iid}.{attempt}")
    poll(f"{path}", lambda: os.path.exists(path))
    with open(path) as f:
        launch = Launch(dict(line.split("=", 1) for line in f.read().splitlines()))
    assert launch.id == iid and launch.attempt == attempt, launch.env
    poll(f"{iid} running", lambda: get_instance(d, iid, key)["status"] == "running")
    return launch


def exited(d, iid, key=None):
    """Wait until the process of the instance's latest attempt has been reaped (its exit code
    recorded); the instance then."""
    def reaped():
        inst = get_instance(d, iid, key)
        return inst if inst["exit_code"] is not None else None
    return poll(f"the exit of {iid}", reaped)


def settled(d, iid, key=None):
    inst = call(d, "GET", f"/api/v1/instances/{iid}?wait=20s", 200, key=key)[1]
    assert inst["status"] not in ("pending", "running"), inst
    return inst


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


@scenario
def instances_through_the_management_api():
    d = Daemon(env=INSTANCE_ENV)
    keys = make_keys(d, ops="admin", acme="tenant:acme")
    d.start()
    A, T = keys["ops"], keys["acme"]
    out = os.path.join(d.tmp, "out")
    os.makedirs(out)
    try:
        greet = native_image(d, "acme", "greet", GREET, key=A)
        handover = native_image(d, "acme", "handover", HANDOVER, key=A)
        theirs = native_image(d, "beta", "quick", b"#!/bin/sh\nexit 0\n", key=A)
        t0 = time.time()

        # start: every field, a real workflow that talks curl over the unix socket
        start = {"image_id": greet, "instance_id": "w1", "input": {"name": "ada"},
                 "env": {"STYLE": "plain"}, "timeout_secs": 60}
        r, w1 = call(d, "POST", "/api/v1/instances", 201, json_body=start, key=T)
        assert r.header("Location") == "/api/v1/instances/w1?tenant_id=acme", r.headers
        assert w1["status"] in ("pending", "running") and w1["tenant_id"] == "acme", w1
        assert w1["input"] == {"name": "ada"} and w1["env"] == {"STYLE": "plain"}, w1
        done = settled(d, "w1", key=T)
        assert done["status"] == "completed" and done["termination_reason"] == "completed", done
        assert done["output"] == {"greeting": "hello ada"}, done
        assert done["attempt"] == 1 and done["checkpoint_id"] == "greet", done
        assert done["finished_at"] and done["started_at"] and done["error"] is None, done
        done = exited(d, "w1", key=T)
        # it exits by itself, unless the zero stop grace after its report kills it first
        assert done["exit_code"] in (0, 128 + 9), done

        # idempotent repeat, and the same id with another request
        r, again = call(d, "POST", "/api/v1/instances", 200, json_body=start, key=T)
        assert again == done, (again, done)
        call(d, "POST", "/api/v1/instances", 409, json_body=dict(start, input={"name": "bob"}),
             key=T)
        # by image name: the newest version of the tenant's image (admin names the tenant)
        r, b1 = call(d, "POST", "/api/v1/instances", 201, key=A,
                     json_body={"image": "quick", "tenant_id": "beta", "instance_id": "b1"})
        assert b1["tenant_id"] == "beta" and b1["image_id"] == theirs, b1
        r, gen = call(d, "POST", "/api/v1/instances", 201, json_body={"image": "greet"}, key=T)
        assert re.fullmatch(r"[0-9a-f-]{36}", gen["instance_id"]), gen  # a UUID
        assert gen["input"] == {} and gen["env"] == {} and gen["timeout_secs"] == 300, gen
        settled(d, gen["instance_id"], key=T)
        assert settled(d, "b1", key=A)["status"] == "completed"

        # list: filters, pagination, total; a tenant key sees its own tenant
        r, page = call(d, "GET", "/api/v1/instances", 200, key=A)
        assert [i["instance_id"] for i in page["instances"]] == \
            [gen["instance_id"], "b1", "w1"], page
        assert page["total"] == 3 and page["next_cursor"] is None, page
        r, mine = call(d, "GET", "/api/v1/instances", 200, key=T)
        assert {i["tenant_id"] for i in mine["instances"]} == {"acme"} and mine["total"] == 2
        r, p1 = call(d, "GET", f"/api/v1/instances?tenant_id=acme&status=completed"
                     f"&image_id={greet}&limit=1", 200, key=A)
        assert len(p1["instances"]) == 1 and p1["total"] == 2 and p1["next_cursor"], p1
        r, p2 = call(d, "GET", f"/api/v1/instances?tenant_id=acme&status=completed"
                     f"&image_id={greet}&limit=1&cursor={p1['next_cursor']}", 200, key=A)
        assert [i["instance_id"] for i in p2["instances"]] == ["w1"], p2
        assert p2["next_cursor"] is None, p2
        past, future = rfc3339(t0 - 60), rfc3339(time.time() + 60)
        r, p = call(d, "GET", f"/api/v1/instances?created_after={past}&created_before={future}"
                    f"&finished_after={past}&finished_before={future}", 200, key=A)
        assert p["total"] == 3, p
        r, p = call(d, "GET", f"/api/v1/instances?created_after={future}", 200, key=A)
        assert p == {"instances": [], "next_cursor": None, "total": 0}, p
        r, p = call(d, "GET", "/api/v1/instances?status=running&finished_before="
                    "2026-01-01T00:00:00.5%2B00:00", 200, key=T)
        assert p["total"] == 0, p

        # get: at once, and a long-poll that ends on its deadline
        assert get_instance(d, "w1", key=T) == done

        # checkpoints, events and logs of the finished workflow
        r, cps = call(d, "GET", "/api/v1/instances/w1/checkpoints", 200, key=T)
        assert [(c["key"], c["size_bytes"]) for c in cps["checkpoints"]] == [("greet", 9)], cps
        r, cps1 = call(d, "GET", "/api/v1/instances/w1/checkpoints?limit=1", 200, key=T)
        assert cps1["checkpoints"] == cps["checkpoints"], cps1
        r, raw = call(d, "GET", "/api/v1/instances/w1/checkpoints/greet", 200, key=T)
        assert raw == b"hello ada", raw
        r, ev = call(d, "GET", "/api/v1/instances/w1/events", 200, key=T)
        types = [e["type"] for e in ev["events"]]
        for t in ("started", "registered", "checkpoint", "progress", "completed", "exited"):
            assert t in types, types
        progress = [e for e in ev["events"] if e["type"] == "progress"]
        assert progress[0]["subtype"] == "greet" and progress[0]["payload"] == {"percent": 100}
        r, ev1 = call(d, "GET", "/api/v1/instances/w1/events?type=checkpoint&subtype=greet", 200,
                      key=T)
        assert [e["type"] for e in ev1["events"]] == ["checkpoint"], ev1
        r, pg = call(d, "GET", "/api/v1/instances/w1/events?limit=2", 200, key=T)
        assert len(pg["events"]) == 2 and pg["next_cursor"], pg
        r, pg2 = call(d, "GET", f"/api/v1/instances/w1/events?limit=1000"
                      f"&cursor={pg['next_cursor']}", 200, key=T)
        assert pg["events"] + pg2["events"] == ev["events"], (pg, pg2, ev)
        r, none = call(d, "GET", f"/api/v1/instances/w1/events?after={future}", 200, key=T)
        assert none == {"events": [], "next_cursor": None}, none
        r, allev = call(d, "GET", f"/api/v1/instances/w1/events?after={past}&before={future}",
                        200, key=T)
        assert allev == ev, allev
        r, text = call(d, "GET", "/api/v1/instances/w1/logs", 200, key=T)
        assert "greeted ada\n" in text, text
        r, tail = call(d, "GET", "/api/v1/instances/w1/logs?tail_bytes=4", 200, key=T)
        assert tail == text[-4:], (tail, text)

        # a finished instance: no stop, no resume, no signal of any kind
        call(d, "POST", "/api/v1/instances/w1/stop", 409, key=T)
        call(d, "POST", "/api/v1/instances/w1/resume", 409, key=T)
        for t in ("cancel", "pause", "resume"):
            call(d, "POST", "/api/v1/instances/w1/signals", 409, json_body={"type": t}, key=T)
        call(d, "POST", "/api/v1/instances/w1/signals/custom", 409, key=T,
             json_body={"wait_key": "approval", "payload": {"ok": True}})

        # a running instance: pause (acknowledged by its program), resume by signal, cancel,
        # resume, stop
        call(d, "POST", "/api/v1/instances", 201, key=T,
             json_body={"image_id": handover, "instance_id": "s1", "env": {"OUT": out}})
        l1 = launched(d, out, "s1", 1, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals/custom", 202, key=T,
             json_body={"wait_key": "approval", "payload": {"ok": True}})
        r, inst = call(d, "GET", "/api/v1/instances/s1?wait=100ms", 200, key=T)
        assert inst["status"] == "running" and inst["attempt"] == 1, inst  # the deadline passed
        call(d, "POST", "/api/v1/instances/s1/resume", 409, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals", 409, json_body={"type": "resume"}, key=T)
        r, inst = call(d, "POST", "/api/v1/instances/s1/signals", 202, key=T,
                       json_body={"type": "pause", "payload": {"why": "maintenance"}})
        assert inst["status"] == "running", inst
        r, sig = l1.call("GET", "/signals", 200)
        assert sig == {"signal": {"type": "pause", "payload": {"why": "maintenance"}}}, sig
        l1.call("POST", "/signals/ack", 204, json_body={"type": "pause"})
        inst = settled(d, "s1", key=T)
        assert inst["status"] == "suspended" and inst["termination_reason"] == "paused", inst
        exited(d, "s1", key=T)
        call(d, "POST", "/api/v1/instances/s1/signals", 409, json_body={"type": "pause"}, key=T)
        r, inst = call(d, "POST", "/api/v1/instances/s1/signals", 202, json_body={"type": "resume"},
                       key=T)
        assert inst["status"] == "pending" and inst["termination_reason"] is None, inst
        l2 = launched(d, out, "s1", 2, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals", 202, json_body={"type": "cancel"}, key=T)
        l2.call("POST", "/signals/ack", 204, json_body={"type": "cancel"})
        inst = settled(d, "s1", key=T)
        assert inst["status"] == "cancelled" and inst["termination_reason"] == "cancelled", inst
        exited(d, "s1", key=T)
        r, inst = call(d, "POST", "/api/v1/instances/s1/resume", 202, key=T)
        assert inst["status"] == "pending", inst
        launched(d, out, "s1", 3, key=T)
        r, inst = call(d, "POST", "/api/v1/instances/s1/stop", 202, json_body={"grace_secs": 0},
                       key=T)
        inst = settled(d, "s1", key=T)
        assert inst["status"] == "cancelled" and inst["termination_reason"] == "stopped", inst
        assert inst["attempt"] == 3, inst
        call(d, "POST", "/api/v1/instances/s1/stop", 409, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals", 409, json_body={"type": "cancel"}, key=T)
        # a stop without a body, of an instance that may not have been launched yet
        call(d, "POST", "/api/v1/instances", 201, key=T,
             json_body={"image_id": handover, "instance_id": "s2", "env": {"OUT": out}})
        call(d, "POST", "/api/v1/instances/s2/stop", 202, key=T)
        inst = settled(d, "s2", key=T)
        assert inst["status"] == "cancelled" and inst["termination_reason"] == "stopped", inst

        # 400: every kind of bad input
        bad_starts = [
            {"image_id": greet, "bogus": 1}, {"image_id": greet, "image": "greet"}, {},
            {"image_id": "a..b"}, {"image_id": greet, "instance_id": "-x"},
            {"image_id": greet, "instance_id": 7}, {"image_id": greet, "env": []},
            {"image_id": greet, "env": {"RUNTARA_X": "1"}}, {"image_id": greet, "env": {"1A": "x"}},
            {"image_id": greet, "env": {"A": 1}}, {"image_id": greet, "env": {"A": "x" * 4097}},
            {"image_id": greet, "timeout_secs": 0}, {"image_id": greet, "timeout_secs": "60"},
            {"image_id": greet, "timeout_secs": 31536001},
        ]
        for body in bad_starts:
            call(d, "POST", "/api/v1/instances", 400, json_body=body, key=T)
        call(d, "POST", "/api/v1/instances", 400, json_body={"image": "greet"}, key=A)  # no tenant
        for raw_body in (b"", b"{", b"[]", b'{"image": "a", "image": "b"}'):
            r, _ = call(d, "POST", "/api/v1/instances", 400, body=raw_body, key=T,
                        headers={"Content-Type": "application/json"})
            assert error_of(r)["code"] == "invalid_json", r
        for q in ("?foo=1", "?status=asleep", "?created_after=yesterday",
                  "?created_before=2026-01-01", "?finished_after=2026-01-01T00:00:00%2B01:00",
                  "?finished_before=x", "?limit=0", "?limit=1001", "?limit=x", "?cursor=0",
                  "?cursor=x"):
            call(d, "GET", "/api/v1/instances" + q, 400, key=T)
        for q in ("?foo=1", "?wait=forever", "?wait=61s", "?wait=-1"):
            call(d, "GET", "/api/v1/instances/w1" + q, 400, key=T)
        for bad in ("a..b", "-x", "%00"):
            base = f"/api/v1/instances/{bad}"
            call(d, "GET", base, 400, key=T)
            call(d, "POST", base + "/stop", 400, key=T)
            call(d, "POST", base + "/resume", 400, key=T)
            call(d, "POST", base + "/signals", 400, json_body={"type": "cancel"}, key=T)
            call(d, "POST", base + "/signals/custom", 400, json_body={"wait_key": "k"}, key=T)
            call(d, "GET", base + "/checkpoints", 400, key=T)
            call(d, "GET", base + "/checkpoints/greet", 400, key=T)
            call(d, "GET", base + "/events", 400, key=T)
            call(d, "GET", base + "/logs", 400, key=T)
        for body in ({"grace_secs": -1}, {"grace_secs": 3601}, {"grace_secs": "5"}, {"x": 1}):
            call(d, "POST", "/api/v1/instances/s1/stop", 400, json_body=body, key=T)
        r, _ = call(d, "POST", "/api/v1/instances/s1/stop", 400, body=b"[]", key=T,
                    headers={"Content-Type": "application/json"})
        for body in ({"type": "stop"}, {}, {"type": "cancel", "x": 1}, {"type": 1}):
            call(d, "POST", "/api/v1/instances/s1/signals", 400, json_body=body, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals", 400, body=b"", key=T,
             headers={"Content-Type": "application/json"})
        for body in ({}, {"wait_key": ""}, {"wait_key": "k" * 129}, {"wait_key": 1},
                     {"wait_key": "k", "x": 1}):
            call(d, "POST", "/api/v1/instances/s1/signals/custom", 400, json_body=body, key=T)
        call(d, "POST", "/api/v1/instances/s1/signals/custom", 400, body=b"nope", key=T,
             headers={"Content-Type": "application/json"})
        for q in ("?foo=1", "?limit=0", "?limit=1001", "?cursor=x"):
            call(d, "GET", "/api/v1/instances/w1/checkpoints" + q, 400, key=T)
        for q in ("?foo=1", "?after=x", "?before=2026-13-45T00:00:00Z", "?limit=0", "?cursor=-1"):
            call(d, "GET", "/api/v1/instances/w1/events" + q, 400, key=T)
        for q in ("?foo=1", "?tail_bytes=0", "?tail_bytes=x", f"?tail_bytes={(10 << 20) + 1}"):
            call(d, "GET", "/api/v1/instances/w1/logs" + q, 400, key=T)

        # 413 and 415: JSON bodies
        big = b'{"x": "' + b"a" * JSON_LIMIT + b'"}'
        for path in ("", "/s1/stop", "/s1/signals", "/s1/signals/custom"):
            call(d, "POST", "/api/v1/instances" + path, 413, body=big, key=T,
                 headers={"Content-Type": "application/json"})
            call(d, "POST", "/api/v1/instances" + path, 415, body=b"{}", key=T,
                 headers={"Content-Type": "text/plain"})
        payload = {"blob": "b" * 65536}  # fits the body limit, not the signal payload limit
        call(d, "POST", "/api/v1/instances/s1/signals", 413, key=T,
             json_body={"type": "cancel", "payload": payload})
        call(d, "POST", "/api/v1/instances/s1/signals/custom", 413, key=T,
             json_body={"wait_key": "k", "payload": payload})

        # 401 on every operation; 403 naming another tenant; 404 for another tenant's instance
        per_instance = [("GET", ""), ("POST", "/stop"), ("POST", "/resume"),
                        ("POST", "/signals"), ("POST", "/signals/custom"),
                        ("GET", "/checkpoints"), ("GET", "/checkpoints/greet"),
                        ("GET", "/events"), ("GET", "/logs")]
        bodies = {"/signals": {"type": "cancel"}, "/signals/custom": {"wait_key": "k"}}
        for key in (None, "rtk_" + "0" * 48):
            for method, path in [("POST", ""), ("GET", "")]:
                r, _ = call(d, method, "/api/v1/instances", 401, key=key,
                            json_body=start if method == "POST" else None)
                assert r.header("WWW-Authenticate"), r.headers
            for method, path in per_instance:
                r, _ = call(d, method, "/api/v1/instances/w1" + path, 401, key=key,
                            json_body=bodies.get(path))
                assert r.header("WWW-Authenticate"), r.headers
        call(d, "GET", "/api/v1/instances?tenant_id=beta", 403, key=T)
        call(d, "POST", "/api/v1/instances", 403, key=T,
             json_body={"image_id": theirs, "tenant_id": "beta"})
        for iid in ("b1", "nobody"):
            for method, path in per_instance:
                call(d, method, f"/api/v1/instances/{iid}" + path, 404, key=T,
                     json_body=bodies.get(path))
        call(d, "GET", "/api/v1/instances/w1/checkpoints/nothing", 404, key=T)
        call(d, "GET", "/api/v1/instances/b1", 200, key=A)
        # the image must exist for the tenant
        call(d, "POST", "/api/v1/instances", 404, json_body={"image_id": theirs}, key=T)
        call(d, "POST", "/api/v1/instances", 404, json_body={"image": "quick"}, key=T)
        call(d, "POST", "/api/v1/instances", 404, key=A,
             json_body={"image_id": "05fcc92b-44d9-43af-932f-8ceccff07a90"})
    finally:
        d.cleanup()


@scenario
def the_instance_api_over_the_unix_socket():
    d = Daemon(env=INSTANCE_ENV).start()
    out = os.path.join(d.tmp, "out")
    os.makedirs(out)
    try:
        img = native_image(d, "acme", "handover", HANDOVER)
        quick = native_image(d, "acme", "quick", b"#!/bin/sh\nexit 0\n")
        call(d, "POST", "/api/v1/instances", 201, json_body={"image_id": quick,
                                                              "instance_id": "other"})
        call(d, "POST", "/api/v1/instances", 201,
             json_body={"image_id": img, "instance_id": "c1", "input": {"n": 1, "s": "x"},
                        "env": {"OUT": out}})
        l1 = launched(d, out, "c1", 1)
        assert l1.socket == os.path.join(d.data_dir, "core.sock"), l1.env
        assert l1.env["RUNTARA_TENANT_ID"] == "acme" and "RUNTARA_CHECKPOINT_ID" not in l1.env
        json_h = {"Content-Type": "application/json"}

        # signals: none pending; a wait that ends on its deadline; a wait that a signal ends
        r, sig = l1.call("GET", "/signals", 200)
        assert sig == {"signal": None}, sig
        t = time.monotonic()
        r, sig = l1.call("GET", "/signals?wait=100ms", 200)
        assert sig == {"signal": None} and time.monotonic() - t >= 0.09, sig
        got = {}

        def long_poll():
            got["t"] = time.monotonic()
            got["r"] = l1.call("GET", "/signals?wait=20s", 200)[1]
            got["t"] = time.monotonic() - got["t"]
        th = threading.Thread(target=long_poll)
        th.start()
        time.sleep(0.1)
        call(d, "POST", "/api/v1/instances/c1/signals", 202, json_body={"type": "pause"})
        th.join(25)
        assert got.get("r") == {"signal": {"type": "pause", "payload": None}}, got
        assert got["t"] < 10, got

        # the calls of a launch, with the pending pause riding on the replies
        r, reg = l1.call("POST", "/register", 200)
        assert reg == {"instance_id": "c1", "tenant_id": "acme", "attempt": 1,
                       "checkpoint_id": None, "status": "running"}, reg
        assert r.header("Runtara-Signal") == "pause", r.headers
        r, inp = l1.call("GET", "/input", 200)
        assert inp == {"n": 1, "s": "x"}, inp
        r, data = l1.call("PUT", "/checkpoints/step-1", 201, body=b"\x00first",
                          headers={"Content-Type": "application/octet-stream"})
        assert data == b"\x00first" and r.header("Runtara-Checkpoint") == "stored", r.headers
        assert r.header("Runtara-Signal") == "pause", r.headers
        r, data = l1.call("PUT", "/checkpoints/step-1", 200, body=b"second")  # no Content-Type
        assert data == b"\x00first" and r.header("Runtara-Checkpoint") == "existing", r.headers
        r, data = l1.call("PUT", "/checkpoints/empty:0", 201, body=b"")
        assert data == b"", data
        r, data = l1.call("GET", "/checkpoints/step-1", 200)
        assert data == b"\x00first", data
        l1.call("GET", "/checkpoints/nothing", 404)
        l1.call("GET", "/checkpoints/bad*key", 400)
        l1.call("PUT", "/checkpoints/bad*key", 400, body=b"x")
        l1.call("PUT", "/checkpoints/" + "k" * 129, 400, body=b"x")
        l1.call("PUT", "/checkpoints/big", 413, body=b"\1" * (CHECKPOINT_LIMIT + 1))
        r, _ = l1.call("PUT", "/checkpoints/at-limit", 201, body=b"\1" * CHECKPOINT_LIMIT)
        r, _ = l1.call("POST", "/heartbeat", 204)
        assert r.header("Runtara-Signal") == "pause", r.headers
        r, ev = l1.call("POST", "/events", 201,
                        json_body={"type": "progress", "subtype": "step-1", "payload": [1, 2]})
        assert isinstance(ev["id"], int) and r.header("Runtara-Signal") == "pause", r
        l1.call("POST", "/events", 201, json_body={"type": "log"})
        r, k1 = l1.call("POST", "/events", 201, json_body={"type": "log", "key": "once"})
        r, k2 = l1.call("POST", "/events", 200, json_body={"type": "log", "key": "once"})
        assert k1["id"] == k2["id"], (k1, k2)
        for body in ({"type": "started"}, {}, {"type": "custom", "x": 1},
                     {"type": "custom", "subtype": 5}, {"type": "custom", "subtype": "s" * 129},
                     {"type": "log", "key": "no/slash"}, {"type": "log", "key": 7}):
            l1.call("POST", "/events", 400, json_body=body)
        for raw_body in (b"", b"{", b"[1]"):
            r, _ = l1.call("POST", "/events", 400, body=raw_body, headers=json_h)
            assert error_of(r)["code"] == "invalid_json", r
        l1.call("POST", "/events", 413, json_body={"type": "custom", "payload": "p" * 65536})
        big = b'{"x": "' + b"a" * JSON_LIMIT + b'"}'
        for path in ("/events", "/signals/ack", "/completed", "/failed", "/sleep", "/wait"):
            l1.call("POST", path, 413, body=big, headers=json_h)
            l1.call("POST", path, 415, body=b"{}", headers={"Content-Type": "text/plain"})
        r, evs = call(d, "GET", "/api/v1/instances/c1/events?type=progress", 200)
        assert [(e["subtype"], e["payload"]) for e in evs["events"]] == [("step-1", [1, 2])], evs
        l1.call("GET", "/signals?wait=1h", 400)
        l1.call("GET", "/signals?wait=61s", 400)

        # acknowledging: only the pending type; a pause suspends the instance
        for body in ({"type": "stop"}, {}, {"type": "pause", "x": 1}):
            l1.call("POST", "/signals/ack", 400, json_body=body)
        l1.call("POST", "/signals/ack", 400, body=b"", headers=json_h)
        l1.call("POST", "/signals/ack", 409, json_body={"type": "cancel"})
        l1.call("POST", "/signals/ack", 204, json_body={"type": "pause"})
        l1.call("POST", "/signals/ack", 409, json_body={"type": "pause"})
        r, sig = l1.call("GET", "/signals", 200)
        assert sig == {"signal": None}, sig
        inst = settled(d, "c1")
        assert inst["status"] == "suspended" and inst["termination_reason"] == "paused", inst
        # a suspended instance: the process should exit; reads still work, changes get 409
        l1.call("POST", "/register", 409)
        l1.call("PUT", "/checkpoints/step-2", 409, body=b"x")
        l1.call("POST", "/completed", 409, json_body={"output": 1})
        l1.call("POST", "/failed", 409, json_body={"error": "late"})
        l1.call("GET", "/checkpoints/step-1", 200)
        l1.call("GET", "/input", 200)
        l1.call("POST", "/heartbeat", 409)
        l1.call("POST", "/events", 409, json_body={"type": "log", "payload": "suspended"})
        exited(d, "c1")

        # a relaunch gets a new token: the old one is refused; it fails by report
        call(d, "POST", "/api/v1/instances/c1/resume", 202)
        l2 = launched(d, out, "c1", 2)
        assert l2.token != l1.token and l2.env["RUNTARA_CHECKPOINT_ID"] == "at-limit", l2.env
        l2.call("POST", "/heartbeat", 401, token=l1.token)
        r, reg = l2.call("POST", "/register", 200)
        assert reg["attempt"] == 2 and reg["checkpoint_id"] == "at-limit", reg
        assert r.header("Runtara-Signal") is None, r.headers
        r, data = l2.call("PUT", "/checkpoints/step-1", 200, body=b"again")
        assert data == b"\x00first", data  # the replay
        for body in ({}, {"error": ""}, {"error": 1}, {"error": "e" * 4097},
                     {"error": "x", "code": 1}):
            l2.call("POST", "/failed", 400, json_body=body)
        r, end = l2.call("POST", "/failed", 200,
                         json_body={"error": "payment declined", "detail": {"code": 51}})
        assert end == {"status": "failed"}, end
        inst = get_instance(d, "c1")
        assert inst["status"] == "failed" and inst["termination_reason"] == "application_error"
        assert inst["error"] == 'payment declined: {"code":51}', inst
        l2.call("POST", "/completed", 409, json_body={"output": 1})
        l2.call("POST", "/failed", 409, json_body={"error": "again"})
        exited(d, "c1")

        # the third launch completes by report
        call(d, "POST", "/api/v1/instances/c1/resume", 202)
        l3 = launched(d, out, "c1", 3)
        l3.call("POST", "/register", 200)
        l3.call("POST", "/completed", 413, json_body={"output": "o" * OUTPUT_LIMIT})
        l3.call("POST", "/completed", 400, json_body={"output": 1, "result": 2})
        l3.call("POST", "/completed", 400, body=b"", headers=json_h)
        r, end = l3.call("POST", "/completed", 200, json_body={"output": {"ok": [1, "two"]}})
        assert end == {"status": "completed"}, end
        l3.call("POST", "/completed", 409, json_body={})
        l3.call("POST", "/failed", 409, json_body={"error": "too late"})
        inst = exited(d, "c1")
        assert inst["status"] == "completed" and inst["output"] == {"ok": [1, "two"]}, inst
        assert inst["attempt"] == 3 and inst["error"] is None, inst

        # durable sleeps and signal waits
        call(d, "POST", "/api/v1/instances", 201,
             json_body={"image_id": img, "instance_id": "z1", "env": {"OUT": out}})
        z1 = launched(d, out, "z1", 1)
        past = "2020-01-01T00:00:00.000Z"
        future = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 300 * 86400))
        for body in ({}, {"until": "tomorrow"}, {"until": 5}, {"until": "2999-01-01T00:00:00Z"},
                     {"until": future, "for": 1}):
            z1.call("POST", "/sleep", 400, json_body=body)
        for body in ({}, {"wait_key": "a b"}, {"wait_key": "k", "until": "soon"}):
            z1.call("POST", "/wait", 400, json_body=body)
        r, s = z1.call("POST", "/sleep", 200, json_body={"until": past})
        assert s == {"status": "running"}, s
        r, s = z1.call("POST", "/wait", 200, json_body={"wait_key": "k", "until": past})
        assert s == {"status": "running", "timed_out": True}, s
        call(d, "POST", "/api/v1/instances/z1/signals/custom", 202,
             json_body={"wait_key": "k", "payload": {"ok": 1}})
        r, s = z1.call("POST", "/wait", 200, json_body={"wait_key": "k"})
        assert s == {"status": "running", "signal": {"type": "custom", "wait_key": "k",
                                                     "payload": {"ok": 1}}}, s
        call(d, "POST", "/api/v1/instances/z1/signals/custom", 202,
             json_body={"wait_key": "g", "payload": {"ok": 2}})
        z1.call("GET", "/signals?checkpoint=got-g", 400)
        z1.call("GET", "/signals?wait_key=g&checkpoint=a*b", 400)
        r, s = z1.call("GET", "/signals?wait_key=g&checkpoint=got-g", 200)
        assert s == {"signal": {"type": "custom", "wait_key": "g", "payload": {"ok": 2}}}, s
        z1.call("GET", "/signals?wait_key=g&checkpoint=got-g", 409)  # saved already
        r, data = z1.call("GET", "/checkpoints/got-g", 200)
        assert json.loads(data) == {"ok": 2}, data
        r, s = z1.call("POST", "/wait", 200, json_body={"wait_key": "k", "until": future})
        assert s == {"status": "suspended", "wake_at": future}, s
        inst = get_instance(d, "z1")
        assert (inst["status"], inst["termination_reason"]) == ("suspended", "waiting_signal")
        z1.call("POST", "/sleep", 409, json_body={"until": future})
        z1.call("POST", "/wait", 409, json_body={"wait_key": "k"})
        t = time.monotonic()  # this launch is over: told at once, not after the wait
        z1.call("GET", "/signals?wait=5s&wait_key=k&checkpoint=late", 409)
        assert time.monotonic() - t < 4
        exited(d, "z1")
        call(d, "POST", "/api/v1/instances/z1/resume", 202)
        z2 = launched(d, out, "z1", 2)
        r, s = z2.call("POST", "/sleep", 200, json_body={"until": future})
        assert s == {"status": "suspended", "wake_at": future}, s
        inst = get_instance(d, "z1")
        assert (inst["status"], inst["termination_reason"]) == ("suspended", "sleeping")
        exited(d, "z1")

        # 400 for an invalid instance id, before the token is looked at; 401 without a valid
        # token, for another instance, and for an unknown one
        calls = [("POST", "/register", None), ("GET", "/input", None),
                 ("PUT", "/checkpoints/k", b"x"), ("GET", "/checkpoints/k", None),
                 ("POST", "/heartbeat", None), ("POST", "/events", {"type": "log"}),
                 ("GET", "/signals", None), ("POST", "/signals/ack", {"type": "pause"}),
                 ("POST", "/completed", {}), ("POST", "/failed", {"error": "x"}),
                 ("POST", "/sleep", {"until": "2030-01-01T00:00:00.000Z"}),
                 ("POST", "/wait", {"wait_key": "k"})]
        for method, path, body in calls:
            kw = {"body": body} if isinstance(body, bytes) else {"json_body": body}
            for token in (None, ""):
                l3.call(method, path, 400, instance="a..b", token=token, **kw)
            for token in ("", "0" * 64, l2.token):
                r, _ = l3.call(method, path, 401, token=token, **kw)
                assert r.header("WWW-Authenticate"), r.headers
            for instance in ("other", "nobody"):
                l3.call(method, path, 401, instance=instance, **kw)
    finally:
        d.cleanup()


# ---- coverage -------------------------------------------------------------------------------

def daemon_routes():
    """(METHOD, pattern) of every entry of the two route tables in src/api/api.c, "{}" for a
    parameter: {"routes": management routes, "core_routes": instance API routes}."""
    with open(os.path.join(SRC_API, "api.c")) as f:
        text = f.read()
    tables = {}
    for m in re.finditer(r"\b(routes|core_routes)\[\]\s*=\s*\{(.*?)\n\};", text, re.S):
        tables[m.group(1)] = {(r.group(1), r.group(2)) for r in
                              re.finditer(r'HTTP_ROUTE\(\s*"([A-Z]+)",\s*"(/[^"]*)"', m.group(2))}
    return tables


def documented_routes(contract):
    return {(m, re.sub(r"\{[^/]+?\}", "{}", tpl)) for tpl, m, _ in contract.operations()}


@test
def every_daemon_route_is_documented_and_every_operation_exists():
    tables = daemon_routes()
    assert ("GET", "/api/v1/health") in tables.get("routes", set()), \
        f"could not read the management route table: {tables}"
    assert ("POST", "/api/v1/instances/{}/register") in tables.get("core_routes", set()), \
        f"could not read the instance API route table: {tables}"
    for table, contract in (("routes", CONTRACT), ("core_routes", CORE)):
        routes, documented = tables[table], documented_routes(contract)
        assert routes - documented == set(), \
            f"routes of {table}[] missing from {contract.name}: {sorted(routes - documented)}"
        assert documented - routes == set(), \
            f"operations of {contract.name} that {table}[] does not have: " \
            f"{sorted(documented - routes)}"
        ids = [op.get("operationId") for _, _, op in contract.operations()]
        assert all(ids) and len(set(ids)) == len(ids), ids


@test
def every_documented_operation_and_status_was_exercised():
    for run in _scenarios:
        if run.__name__ not in _ran:
            run()
    for contract, unreachable in ((CONTRACT, UNREACHABLE), (CORE, CORE_UNREACHABLE)):
        documented = {(op["operationId"], str(s)) for _, _, op in contract.operations()
                      for s in op["responses"]}
        stale = unreachable - documented
        assert not stale, \
            f"{contract.name}: unreachable responses that are not documented: {sorted(stale)}"
        ops = {op for op, _ in documented}
        missing_ops = ops - {op for op, _ in contract.seen}
        assert not missing_ops, f"{contract.name}: operations never exercised: {sorted(missing_ops)}"
        missing = documented - contract.seen - unreachable
        assert not missing, \
            f"{contract.name}: documented responses never exercised: {sorted(missing)}"
        unexpected = contract.seen & unreachable
        assert not unexpected, \
            f"{contract.name}: reached responses listed as unreachable: {sorted(unexpected)}"


if __name__ == "__main__":
    main()
