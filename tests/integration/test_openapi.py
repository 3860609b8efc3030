#!/usr/bin/env python3
"""The OpenAPI contract (docs/openapi.yaml) against the real daemon: every response of a set of
real requests must be documented for its path, method and status, carry a documented media type,
have a body that validates against the documented schema and carry the documented required
headers. Every documented operation and status must be exercised, and every route of the daemon
must be documented, so an endpoint can neither go undocumented nor untested."""
import glob
import hashlib
import os
import re
import sqlite3
import sys

import jsonschema
import yaml

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, Response, error_of, main, test  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SPEC_PATH = os.path.join(HERE, "../../docs/openapi.yaml")
SRC_API = os.path.join(HERE, "../../src/api")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# Documented statuses that no test here can provoke: store or disk failures, a full disk, a
# store that does not answer. Each must still be documented where listed.
UNREACHABLE = {
    ("getHealth", "503"),
    ("registerImage", "500"), ("registerImage", "507"),
    ("listImages", "500"),
    ("getImage", "500"),
    ("deleteImage", "500"), ("deleteImage", "507"),
}

PROG = b"\x7fELF" + os.urandom(3000)
LIMIT = 16 << 10  # RUNTARA_MAX_IMAGE_SIZE of the daemon with keys


class Nonconformance(AssertionError):
    pass


def load_spec():
    with open(SPEC_PATH) as f:
        return yaml.safe_load(f)


class Contract:
    """Checks responses against the document and records what was exercised."""

    def __init__(self, spec):
        self.spec = spec
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


SPEC = load_spec()
CONTRACT = Contract(SPEC)


def call(d, method, path, expect, **kw):
    """A request whose response must conform and have status `expect`."""
    r = d.request(method, path, **kw)
    body = CONTRACT.check(method, path, r)
    assert r.status == expect, f"{method} {path}: expected {expect}, got {r!r}"
    if r.status >= 400:
        error_of(r)
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


@test
def the_documented_examples_match_their_schemas():
    n = 0
    for tpl, method, op in CONTRACT.operations():
        for status, doc in op["responses"].items():
            for ctype, media in (CONTRACT.resolve(doc).get("content") or {}).items():
                if "example" in media and "schema" in media and "json" in ctype:
                    CONTRACT.validate(media["example"], media["schema"],
                                      f"example of {method} {tpl} {status}")
                    n += 1
    assert n >= 8, n


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
        assert v2["version"] == 2 and v2["description"] is None and v2["runner_type"] == "oci"
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
        db = sqlite3.connect(os.path.join(d.data_dir, "runtara.db"))
        try:
            db.execute("INSERT INTO instances (instance_id, tenant_id, image_id, status, "
                       "created_at) VALUES ('oa-i1', 'acme', ?, 'running', 0)", (img["image_id"],))
            db.commit()
            call(d, "DELETE", f"/api/v1/images/{img['image_id']}", 409)
            db.execute("UPDATE instances SET status = 'completed'")
            db.commit()
        finally:
            db.close()

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

        # 403: a tenant key acting for another tenant
        call(d, "GET", "/api/v1/images?tenant_id=beta", 403, key=keys["acme"])
        upload(d, "?tenant_id=beta&name=w", PROG, 403, key=keys["acme"])

        # another tenant's image is a 404, exactly like a missing one
        r, lst = call(d, "GET", "/api/v1/images", 200, key=keys["acme"])
        assert lst["images"] == [mine], lst
        call(d, "GET", f"/api/v1/images/{theirs['image_id']}", 404, key=keys["acme"])
        call(d, "DELETE", f"/api/v1/images/{theirs['image_id']}", 404, key=keys["acme"])
        call(d, "GET", f"/api/v1/images/{theirs['image_id']}", 200, key=keys["ops"])

        # 413: announced by Content-Length, and crossed by a chunked body
        upload(d, "?name=big", b"\0" * (LIMIT + 1), 413, key=keys["acme"])
        upload(d, "?name=big", iter([b"\0" * 4096] * (LIMIT // 4096 + 1)), 413, key=keys["acme"])
        r, ok = upload(d, "?name=big", iter([b"\1" * 4096] * (LIMIT // 4096)), 201,
                       key=keys["acme"])  # exactly the limit, chunked
        assert ok["size_bytes"] == LIMIT, ok

        call(d, "DELETE", f"/api/v1/images/{mine['image_id']}", 204, key=keys["acme"])
    finally:
        d.cleanup()


# ---- coverage -------------------------------------------------------------------------------

def daemon_routes():
    """(METHOD, pattern) of every route table entry in src/api/*.c, "{}" for a parameter."""
    routes = set()
    for path in glob.glob(os.path.join(SRC_API, "*.c")):
        with open(path) as f:
            text = f.read()
        for m in re.finditer(r'\{\s*"([A-Z]+)",\s*"(/[^"]*)"', text):
            routes.add((m.group(1), m.group(2)))
    return routes


@test
def every_daemon_route_is_documented_and_every_operation_exists():
    routes = daemon_routes()
    assert ("GET", "/api/v1/health") in routes, f"could not read the route table: {routes}"
    documented = {(m, re.sub(r"\{[^/]+?\}", "{}", tpl)) for tpl, m, _ in CONTRACT.operations()}
    assert routes - documented == set(), \
        f"routes of the daemon missing from docs/openapi.yaml: {sorted(routes - documented)}"
    assert documented - routes == set(), \
        f"documented operations the daemon does not have: {sorted(documented - routes)}"
    ids = [op.get("operationId") for _, _, op in CONTRACT.operations()]
    assert all(ids) and len(set(ids)) == len(ids), ids


@test
def every_documented_operation_and_status_was_exercised():
    for run in _scenarios:
        if run.__name__ not in _ran:
            run()
    documented = {(op["operationId"], str(s)) for _, _, op in CONTRACT.operations()
                  for s in op["responses"]}
    stale = UNREACHABLE - documented
    assert not stale, f"UNREACHABLE names responses that are not documented: {sorted(stale)}"
    ops = {op for op, _ in documented}
    missing_ops = ops - {op for op, _ in CONTRACT.seen}
    assert not missing_ops, f"operations never exercised: {sorted(missing_ops)}"
    missing = documented - CONTRACT.seen - UNREACHABLE
    assert not missing, f"documented responses never exercised: {sorted(missing)}"
    unexpected = CONTRACT.seen & UNREACHABLE
    assert not unexpected, f"reached responses listed as unreachable: {sorted(unexpected)}"


if __name__ == "__main__":
    main()
