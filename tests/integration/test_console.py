#!/usr/bin/env python3
"""The web console (/ui) in a real browser: headless Chromium from Debian's chromium and
chromium-driver packages, driven by python3-selenium, against the real daemon. It lists
instances, opens one and draws its timeline, pauses and resumes it, uploads an image, shows
tenant metrics and health, and refuses a tenant key another tenant's instance. Screenshots go to
BUILD/console-screenshots/. The browser's console must stay free of errors (a script error, or a
load the Content-Security-Policy blocked)."""
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import BUILD, deadline_in, main, test  # noqa: E402
from programs import LOOP, PRELUDE  # noqa: E402

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

SHOTS = os.path.join(BUILD, "console-screenshots")


def image(d, body, key, tenant="acme", name="wf"):
    r = d.upload(tenant, name, body.encode(), extra="&runner_type=native", key=key)
    assert r.status == 201, r
    return r.json()["image_id"]


def start(d, img, key, iid, **fields):
    r = d.request("POST", "/api/v1/instances", key=key,
                  json_body={"image_id": img, "instance_id": iid, **fields})
    assert r.status == 201, r


def wait(d, iid, key):
    deadline = deadline_in(30)
    while time.monotonic() < deadline:
        inst = d.request("GET", f"/api/v1/instances/{iid}?wait=10s", key=key).json()
        if inst["status"] in ("completed", "failed", "cancelled", "suspended"):
            return inst
    raise AssertionError(f"{iid} did not settle: {inst}")


def scratch(d, name):
    p = os.path.join(d.tmp, "out", name)
    os.makedirs(p, exist_ok=True)
    return p
STEPS = PRELUDE + 'for i in 1 2 3; do step $i >/dev/null; done\ncomplete \'{"steps": 3}\'\n'


class Console:
    """A headless Chromium on the daemon's console."""

    def __init__(self, d):
        o = webdriver.ChromeOptions()
        o.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1100", "--lang=en-US"):
            o.add_argument(a)
        o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.d = d
        self.b = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)

    def open(self, route=""):
        self.b.get(f"{self.d.url}/ui{route}")

    def find(self, css, timeout=20):
        return self.until(lambda: self.b.find_element(By.CSS_SELECTOR, css), css, timeout)

    def click(self, css, timeout=20):
        """Click the element css names, found again if the page redrew it before the click."""
        def once():
            self.b.find_element(By.CSS_SELECTOR, css).click()
            return True
        self.until(once, css, timeout)

    def count(self, css):
        """How many elements css names now, looked up afresh: an element found before a redraw
        (the timeline is drawn again as events arrive) no longer has children."""
        return len(self.b.find_elements(By.CSS_SELECTOR, css))

    def text(self, css, timeout=20):
        """The text of the element css names, read again from a new element if the page redrew
        it between the find and the read (the console redraws as events arrive)."""
        return self.until(lambda: [self.b.find_element(By.CSS_SELECTOR, css).text], css,
                          timeout)[0]

    def until(self, fn, what, timeout=20):
        deadline, last = deadline_in(timeout), None
        while time.monotonic() < deadline:
            try:
                v = fn()
                if v:
                    return v
            except Exception as e:  # not there yet
                last = e
            time.sleep(0.05)
        self.shot("timeout")
        raise AssertionError(f"timed out waiting for {what} ({last}); page: "
                             f"{self.b.find_element(By.TAG_NAME, 'main').text[:1500]}")

    def use_key(self, key):
        self.find("#key-input").send_keys(key)
        self.b.find_element(By.CSS_SELECTOR, "#key-save").click()

    def confirm(self):
        self.click("#confirm[open] #confirm-ok")

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        self.b.execute_script("window.scrollTo(0, 0)")
        self.b.save_screenshot(os.path.join(SHOTS, name + ".png"))

    def errors(self):
        """Script errors and blocked loads; not the API's refusals (a 401 before the key is
        entered), which the page shows itself."""
        return [e for e in self.b.get_log("browser")
                if e["level"] == "SEVERE" and e.get("source") != "network"]

    def check_console(self):
        errors = self.errors()
        assert errors == [], errors

    def close(self):
        self.b.quit()


@contextlib.contextmanager
def console(d):
    """A Console on d for the body of a with; after it, the browser's console must be free of
    errors. The browser and d are released however it ends, also when the browser does not
    start."""
    try:
        c = Console(d)
    except BaseException:
        d.cleanup()
        raise
    try:
        yield c
        c.check_console()
    finally:
        try:
            c.close()
        finally:
            d.cleanup()


def setup():
    """A daemon with keys; acme's done1 (completed, three checkpoints) and loop1 (running), and
    beta's b1."""
    d, keys = harness.keyed_daemon()
    try:
        populate(d, keys["ops"])
    except BaseException:
        d.cleanup()
        raise
    return d, keys


def populate(d, ops):
    img = image(d, STEPS, ops)
    loop = image(d, PRELUDE + LOOP, ops, name="looper")
    start(d, img, ops, "done1", input={"order": 1842}, env={"OUT": scratch(d, "done1")})
    start(d, loop, ops, "loop1", env={"OUT": scratch(d, "loop1")})
    start(d, image(d, STEPS, ops, tenant="beta"), ops, "b1", env={"OUT": scratch(d, "b1")})
    for iid in ("done1", "b1"):
        assert wait(d, iid, ops)["status"] == "completed"
    harness_wait_file(os.path.join(d.tmp, "out", "loop1", "looping"))


def harness_wait_file(path):
    deadline = deadline_in(20)
    while not os.path.exists(path):
        assert time.monotonic() < deadline, path
        time.sleep(0.02)


@test
def lists_instances_and_draws_one_instances_timeline():
    d, keys = setup()
    with console(d) as c:
        c.open()
        c.use_key(keys["ops"])
        for iid in ("done1", "loop1", "b1"):
            c.find(f'#instance-rows tr[data-instance="{iid}"]')
        assert c.text('tr[data-instance="done1"] [data-status]') == "completed"
        c.shot("instances")
        c.click('tr[data-instance="done1"] a')
        c.find("#timeline")
        c.until(lambda: c.count('#timeline [data-type="checkpoint"]') == 3,
                "three checkpoints on the timeline")
        assert c.count('#timeline rect.tl-run[data-type="started"]'), \
            "no launch drawn"
        assert c.count('#timeline circle[data-type="completed"]'), \
            "no end drawn"
        assert "completed" in c.text("#status")
        assert '"order": 1842' in c.text(".two pre")
        kinds = c.until(lambda: [[r.get_attribute("data-event") for r in
                                  c.b.find_elements(By.CSS_SELECTOR, "#event-rows tr")]],
                        "the event rows")[0]
        assert kinds[:2] == ["started", "registered"], kinds
        # a checkpoint's content
        c.click('tr[data-checkpoint="step1"] button')
        c.until(lambda: "result-1" in c.find("#checkpoint-preview").text, "the preview")
        c.shot("instance")


@test
def pauses_and_resumes_an_instance_from_the_console():
    d, keys = setup()
    with console(d) as c:
        c.open("#/instances/acme/loop1")
        c.use_key(keys["ops"])
        c.until(lambda: "running" in c.find("#status").text, "a running instance")
        c.click('[data-action="pause"]')
        c.confirm()
        c.until(lambda: "suspended" in c.find("#status").text, "the pause")
        assert "paused" in c.text("#status")
        assert d.request("GET", "/api/v1/instances/loop1", key=keys["ops"]).json()["status"] == \
            "suspended"
        c.shot("paused")
        c.click('[data-action="resume"]')
        c.confirm()
        c.until(lambda: "completed" in c.find("#status").text, "the resumed run to complete",
                timeout=30)
        inst = d.request("GET", "/api/v1/instances/loop1", key=keys["ops"]).json()
        assert (inst["status"], inst["attempt"], inst["output"]) == \
            ("completed", 2, {"attempt": 2}), inst
        # the timeline shows both launches and the suspension between them
        c.find("#timeline")
        c.until(lambda: c.count("#timeline rect.tl-run") == 2, "two runs")
        assert c.count("#timeline rect.tl-sleep"), "no suspension drawn"
        c.shot("resumed")
        # a dismissed confirmation does nothing
        c.find('[data-action="stop"]')


@test
def uploads_an_image_from_the_browser():
    d, keys = harness.keyed_daemon()
    path = os.path.join(d.tmp, "program.sh")
    with open(path, "w") as f:
        f.write(STEPS)
    with console(d) as c:
        c.open("#/images")
        c.use_key(keys["acme"])
        c.find('#upload [name="tenant"]').send_keys("acme")
        c.find('#upload [name="name"]').send_keys("uploaded")
        c.find('#upload [name="runner"] option[value="native"]').click()
        c.find('#upload [name="file"]').send_keys(path)
        c.find('#upload button[type="submit"]').click()
        done = c.text("#upload-done")
        assert "registered uploaded version 1" in done, done
        row = c.text('#image-rows tr[data-image]')
        assert "uploaded" in row and "native" in row, row
        imgs = d.request("GET", "/api/v1/images", key=keys["acme"]).json()["images"]
        assert [(i["name"], i["size_bytes"]) for i in imgs] == [("uploaded", len(STEPS))], imgs
        c.shot("images")


@test
def a_tenant_key_is_refused_another_tenants_instance():
    d, keys = setup()
    with console(d) as c:
        c.open()
        c.use_key(keys["acme"])
        c.find('#instance-rows tr[data-instance="done1"]')
        assert not c.b.find_elements(By.CSS_SELECTOR, 'tr[data-instance="b1"]')
        c.open("#/instances/beta/b1")
        err = c.text(".error")
        assert "cannot act for another tenant" in err or "does not exist" in err, err
        assert not c.b.find_elements(By.CSS_SELECTOR, "#timeline")
        # the key stays for the session, across a reload
        c.b.refresh()
        state = c.text("#key-state")
        assert state.startswith("key rtk_"), state


@test
def shows_tenant_metrics_and_health():
    d, keys = setup()
    with console(d) as c:
        c.open("#/metrics?tenant=acme")
        c.use_key(keys["acme"])
        c.until(lambda: c.find("#metrics-total").text == "1", "one ended instance")
        assert c.find("#metrics-chart").find_elements(By.CSS_SELECTOR, "rect.bar-ok")
        assert c.find("#memory-chart").find_elements(By.CSS_SELECTOR, "rect.bar-memory")
        c.shot("metrics")
        c.open("#/health")
        c.until(lambda: "ok" in c.find("#health-status").text, "health")
        assert c.text("#health-metrics").count("\n") >= 5
        c.shot("health")


if __name__ == "__main__":
    main()
