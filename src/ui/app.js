// The web console of runtara-environment: a client of the public management API only
// (docs/openapi.yaml), with no framework and no build step. Every element is built with h(), so
// text from the server is never parsed as HTML. The API key lives in this tab's sessionStorage.
"use strict";

const KEY = "runtara.key";
const STATUSES = ["pending", "running", "suspended", "completed", "failed", "cancelled"];
const ENDED = new Set(["completed", "failed", "cancelled"]);
let cleanup = []; // what the current view must stop when the route changes (timers, polls)

// ---- small helpers ------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElementNS(
    ["svg", "rect", "line", "text", "circle", "path", "g", "title", "polyline"].includes(tag)
      ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml", tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (sel, el = document) => el.querySelector(sel);
const enc = encodeURIComponent;

function fmtTime(iso) {
  if (!iso) return "-";
  return iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "-";
  return ms < 1000 ? ms.toFixed(1) + " ms" : (ms / 1000).toFixed(2) + " s";
}

function badge(status) {
  return h("span", { class: "badge " + status, "data-status": status }, status);
}

function json(v) {
  return h("pre", {}, v === undefined ? "-" : JSON.stringify(v, null, 2));
}

function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err.message || String(err));
}

function query(params) {
  const q = Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== "")
    .map(([k, v]) => enc(k) + "=" + enc(v)).join("&");
  return q ? "?" + q : "";
}

function routeParams() {
  const hash = location.hash.replace(/^#/, "") || "/instances";
  const [path, q] = hash.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent),
           params: Object.fromEntries(new URLSearchParams(q || "")) };
}

function later(fn, ms) {
  const t = setTimeout(fn, ms);
  cleanup.push(() => clearTimeout(t));
}

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, { body, raw, signal, contentType } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) {
    headers["Content-Type"] = contentType || "application/json";
    if (!contentType) body = JSON.stringify(body);
  }
  const r = await fetch(path, { method, headers, body, signal });
  if (!r.ok) {
    let code = "http", message = `${method} ${path}: HTTP ${r.status}`;
    try {
      const e = (await r.json()).error;
      code = e.code; message = `${e.message} (HTTP ${r.status})`;
    } catch (_) { /* not the API's error document */ }
    if (r.status === 401) showKeyState(message);
    throw new ApiError(r.status, code, message);
  }
  if (raw) return new Uint8Array(await r.arrayBuffer());
  if (r.status === 204) return null;
  const type = r.headers.get("Content-Type") || "";
  return type.startsWith("application/json") ? r.json() : r.text();
}

// An instance's API path; the tenant names it when ids repeat across tenants.
function instPath(tenant, id, suffix = "", params = {}) {
  return `/api/v1/instances/${enc(id)}${suffix}` + query({ ...params, tenant_id: tenant });
}

// ---- the key ------------------------------------------------------------------------------

function showKeyState(problem) {
  const key = sessionStorage.getItem(KEY);
  $("#key-state").textContent = problem ? problem.replace(/ \(HTTP 401\)$/, "")
    : key ? "key " + key.slice(0, 8) + "…" : "no key (open mode)";
  $("#key-forget").disabled = !key;
}

function setupKey() {
  $("#key-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const v = $("#key-input").value.trim();
    if (v) sessionStorage.setItem(KEY, v);
    $("#key-input").value = "";
    showKeyState();
    render();
  });
  $("#key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showKeyState();
    render();
  });
  showKeyState();
}

// A confirmation with optional extra fields; resolves to the fields' values, or null.
function confirmDialog(text, fields = []) {
  const d = $("#confirm");
  $("#confirm-text").textContent = text;
  const extra = $("#confirm-extra");
  extra.replaceChildren(...fields.map(f => h("label", {}, f.label,
    f.multiline ? h("textarea", { name: f.name, rows: 4 }, f.value || "")
      : h("input", { name: f.name, value: f.value || "" }))));
  return new Promise(resolve => {
    d.addEventListener("close", () => {
      if (d.returnValue !== "ok") return resolve(null);
      const out = {};
      for (const f of fields) out[f.name] = $(`[name="${f.name}"]`, extra).value;
      resolve(out);
    }, { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

// ---- instances ----------------------------------------------------------------------------

async function viewInstances(view, params) {
  const form = h("form", { class: "filters", id: "instance-filters" },
    h("label", {}, "Tenant", h("input", { name: "tenant", value: params.tenant || "" })),
    h("label", {}, "Status", h("select", { name: "status" }, h("option", { value: "" }, "any"),
      STATUSES.map(s => h("option", { value: s, selected: params.status === s }, s)))),
    h("label", {}, "Image id", h("input", { name: "image", value: params.image || "" })),
    h("label", {}, "Created after (UTC)",
      h("input", { name: "after", type: "datetime-local", value: params.after || "" })),
    h("button", { type: "submit" }, "Filter"),
    h("label", { class: "live" }, "Live",
      h("input", { type: "checkbox", id: "live", checked: params.live !== "0" })));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = "#/instances" + query({ tenant: f.get("tenant"), status: f.get("status"),
      image: f.get("image"), after: f.get("after"), live: $("#live").checked ? "" : "0" });
  });
  const body = h("tbody", { id: "instance-rows" });
  const more = h("button", { class: "secondary", id: "more", hidden: true }, "Load more");
  const total = h("span", { class: "note", id: "instance-total" });
  const problem = h("div");
  view.replaceChildren(h("h1", {}, "Instances"), form, problem,
    h("table", { id: "instances" }, h("thead", {}, h("tr", {},
      ["Instance", "Tenant", "Status", "Reason", "Attempt", "Image", "Created", "Finished"]
        .map(t => h("th", {}, t)))), body),
    h("p", {}, more, " ", total));

  const filters = { tenant_id: params.tenant, status: params.status, image_id: params.image,
    created_after: params.after ? params.after + (params.after.length === 16 ? ":00Z" : "Z")
      : undefined, limit: 50 };
  let cursor = null, shown = 0;
  const row = i => h("tr", { "data-instance": i.instance_id },
    h("td", {}, h("a", { href: `#/instances/${enc(i.tenant_id)}/${enc(i.instance_id)}` },
      i.instance_id)),
    h("td", {}, i.tenant_id), h("td", {}, badge(i.status)), h("td", {}, i.termination_reason || ""),
    h("td", { class: "num" }, i.attempt), h("td", { class: "mono" }, i.image_id.slice(0, 8)),
    h("td", {}, fmtTime(i.created_at)), h("td", {}, fmtTime(i.finished_at)));

  async function load(append) {
    try {
      const page = await api("GET", "/api/v1/instances" +
        query({ ...filters, cursor: append ? cursor : undefined,
                limit: append ? 50 : Math.max(50, shown) }));
      if (append) body.append(...page.instances.map(row));
      else body.replaceChildren(...page.instances.map(row));
      shown = body.children.length;
      cursor = page.next_cursor;
      more.hidden = !cursor;
      total.textContent = `${shown} of ${page.total}`;
      problem.replaceChildren();
    } catch (e) { problem.replaceChildren(errorBox(e)); }
  }
  more.addEventListener("click", () => load(true));
  await load(false);
  // live refresh: the list has no long poll, so it is read again every 3 s while shown
  const tick = async () => {
    if ($("#live") && $("#live").checked) await load(false);
    later(tick, 3000);
  };
  later(tick, 3000);
}

// The timeline: one lane for the launches (started to their end), one for sleeps and signal
// waits (suspended to woken or resumed), marks for checkpoints and the program's own events.
function timeline(inst, events) {
  const W = 1000, LANE = 26, TOP = 8, H = TOP + 3 * LANE + 24;
  const times = events.map(e => Date.parse(e.created_at));
  const t0 = Math.min(...times, Date.parse(inst.created_at));
  const t1 = Math.max(...times, ENDED.has(inst.status) ? 0 : Date.now(), t0 + 1);
  const x = t => 90 + (t - t0) / (t1 - t0) * (W - 110);
  const svg = h("svg", { class: "timeline", id: "timeline", viewBox: `0 0 ${W} ${H}`,
                         role: "img", "aria-label": "timeline of the instance's events" });
  ["launches", "sleeps", "events"].forEach((name, i) => {
    svg.append(h("rect", { class: "tl-lane", x: 90, y: TOP + i * LANE, width: W - 110,
                           height: LANE - 6 }),
               h("text", { class: "tl-label", x: 4, y: TOP + i * LANE + 14 }, name));
  });
  const span = (cls, lane, from, to, label, ev) => svg.append(h("rect", {
    class: cls, x: x(from), y: TOP + lane * LANE + 2, height: LANE - 10,
    width: Math.max(3, x(to) - x(from)), "data-type": ev.type, "data-event-id": ev.id },
    h("title", {}, label)));
  let run = null, sleep = null;
  const end = ENDED.has(inst.status) ? t1 : Date.now();
  for (const ev of events) {
    const t = Date.parse(ev.created_at);
    const label = `${ev.type}${ev.subtype ? " " + ev.subtype : ""} at ${fmtTime(ev.created_at)}`;
    switch (ev.type) {
      case "started": run = { t, ev }; break;
      case "suspended":
        if (run) { span("tl-run", 0, run.t, t, "run " + label, run.ev); run = null; }
        sleep = { t, ev }; break;
      case "woken": case "resumed":
        if (sleep) { span("tl-sleep", 1, sleep.t, t, "sleep until " + label, sleep.ev); sleep = null; }
        break;
      case "completed": case "failed": case "cancelled":
        if (run) { span("tl-run", 0, run.t, t, "run " + label, run.ev); run = null; }
        svg.append(h("circle", { class: "tl-" + ev.type, cx: x(t), cy: TOP + 9, r: 6,
                                 "data-type": ev.type, "data-event-id": ev.id },
                     h("title", {}, label)));
        break;
      case "checkpoint":
        svg.append(h("line", { class: "tl-checkpoint", x1: x(t), x2: x(t), y1: TOP + 2 * LANE + 1,
                               y2: TOP + 3 * LANE - 7, "data-type": ev.type,
                               "data-event-id": ev.id }, h("title", {}, label)));
        break;
      default:
        svg.append(h("circle", { class: "tl-mark", cx: x(t), cy: TOP + 2 * LANE + 10, r: 3,
                                 "data-type": ev.type, "data-event-id": ev.id },
                     h("title", {}, label)));
    }
  }
  if (run) span("tl-run", 0, run.t, end, "running since " + fmtTime(run.ev.created_at), run.ev);
  if (sleep) span("tl-sleep", 1, sleep.t, end, "suspended since " + fmtTime(sleep.ev.created_at),
                  sleep.ev);
  const axisY = TOP + 3 * LANE + 14;
  for (let i = 0; i <= 4; i++) {
    const t = t0 + (t1 - t0) * i / 4;
    svg.append(h("text", { class: "tl-axis", x: x(t) - (i === 4 ? 60 : i ? 30 : 0), y: axisY },
                 new Date(t).toISOString().slice(11, 23)));
  }
  return svg;
}

function preview(bytes) {
  const head = bytes.slice(0, 512);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(head);
  const printable = !/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text);
  return (printable ? text : Array.from(head, b => b.toString(16).padStart(2, "0")).join(" ")) +
    (bytes.length > 512 ? " …" : "");
}

async function viewInstance(view, tenant, id) {
  const problem = h("div");
  view.replaceChildren(h("h1", {}, "Instance ", h("span", { class: "mono" }, id)), problem);
  let inst, events = [];
  try {
    inst = await api("GET", instPath(tenant, id));
  } catch (e) {
    view.append(errorBox(e));
    return;
  }
  const head = h("div", { class: "card", id: "instance-head" });
  const actions = h("div", { class: "actions", id: "actions" });
  const tl = h("div", { id: "timeline-box" });
  const evBody = h("tbody", { id: "event-rows" });
  const cps = h("div", { id: "checkpoints" });
  const logs = h("pre", { id: "logs" }, "");
  const io = h("div", { class: "two" });
  view.append(head, actions, h("h2", {}, "Timeline"), tl, io,
    h("h2", {}, "Events"), h("table", {}, h("thead", {}, h("tr", {},
      ["#", "Time", "Type", "Subtype", "Payload"].map(t => h("th", {}, t)))), evBody),
    h("h2", {}, "Checkpoints"), cps, h("h2", {}, "Logs"), logs);

  const act = (label, cls, question, fields, run) => h("button", {
    class: cls, "data-action": label.toLowerCase(),
    onclick: async () => {
      const got = await confirmDialog(question, fields);
      if (!got) return;
      try { await run(got); problem.replaceChildren(); await refresh(); }
      catch (e) { problem.replaceChildren(errorBox(e)); }
    } }, label);

  function drawHead() {
    head.replaceChildren(h("dl", { class: "grid" },
      h("dt", {}, "Status"), h("dd", { id: "status" }, badge(inst.status),
        inst.termination_reason ? " " + inst.termination_reason : ""),
      h("dt", {}, "Tenant"), h("dd", {}, inst.tenant_id),
      h("dt", {}, "Image"), h("dd", { class: "mono" }, inst.image_id),
      h("dt", {}, "Attempts"), h("dd", { id: "attempt" }, inst.attempt),
      h("dt", {}, "Checkpoint"), h("dd", {}, inst.checkpoint_id || "-"),
      h("dt", {}, "Daemon"), h("dd", {}, inst.daemon || "-"),
      h("dt", {}, "Created"), h("dd", {}, fmtTime(inst.created_at)),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(inst.started_at)),
      h("dt", {}, "Finished"), h("dd", {}, fmtTime(inst.finished_at)),
      h("dt", {}, "Exit"), h("dd", {}, inst.exit_code === null ? "-" :
        `${inst.exit_code} (peak memory ${fmtBytes(inst.memory_peak_bytes)}, ` +
        `CPU ${fmtMs(inst.cpu_usec / 1000)})`),
      inst.error ? [h("dt", {}, "Error"), h("dd", { class: "mono" }, inst.error)] : null));
    const live = inst.status === "running" || inst.status === "pending";
    const stoppable = !ENDED.has(inst.status);
    actions.replaceChildren(
      act("Pause", "secondary", `Pause ${id}? It suspends at its next checkpoint.`, [],
          () => api("POST", instPath(tenant, id, "/signals"), { body: { type: "pause" } })),
      act("Resume", "secondary", `Resume ${id}? It is launched again and replays its checkpoints.`,
          [], () => api("POST", instPath(tenant, id, "/resume"))),
      act("Cancel", "secondary", `Cancel ${id}? It is asked to stop at its next checkpoint.`, [],
          () => api("POST", instPath(tenant, id, "/signals"), { body: { type: "cancel" } })),
      act("Signal", "secondary", `Send a custom signal to ${id}:`,
          [{ name: "wait_key", label: "Wait key" },
           { name: "payload", label: "Payload (JSON)", value: "{}", multiline: true }],
          f => api("POST", instPath(tenant, id, "/signals/custom"),
                   { body: { wait_key: f.wait_key, payload: JSON.parse(f.payload || "null") } })),
      act("Stop", "danger", `Stop ${id} now? Its process gets SIGTERM, then SIGKILL.`, [],
          () => api("POST", instPath(tenant, id, "/stop"), { body: {} })));
    $("[data-action=pause]", actions).disabled = !live;
    $("[data-action=resume]", actions).disabled = live || inst.status === "completed";
    $("[data-action=cancel]", actions).disabled = !stoppable;
    $("[data-action=signal]", actions).disabled = ENDED.has(inst.status);
    $("[data-action=stop]", actions).disabled = !stoppable;
    io.replaceChildren(h("div", {}, h("h2", {}, "Input"), json(inst.input)),
                       h("div", {}, h("h2", {}, "Output"), json(inst.output)));
  }

  function addEvents(more) {
    events.push(...more);
    evBody.append(...more.map(ev => h("tr", { "data-event": ev.type },
      h("td", { class: "num" }, ev.id),
      h("td", { class: "nowrap", title: ev.created_at }, (ev.created_at || "").slice(11, 23)),
      h("td", {}, ev.type),
      h("td", {}, ev.subtype || ""),
      h("td", { class: "mono" }, ev.payload === null ? "" : JSON.stringify(ev.payload)))));
    tl.replaceChildren(timeline(inst, events));
  }

  async function loadCheckpoints() {
    const page = await api("GET", instPath(tenant, id, "/checkpoints", { limit: 200 }));
    const out = h("pre", { id: "checkpoint-preview", hidden: true });
    cps.replaceChildren(page.checkpoints.length === 0 ? h("p", { class: "note" }, "none yet") :
      h("table", {}, h("thead", {}, h("tr", {}, ["Key", "Size", "Saved", ""].map(t => h("th", {}, t)))),
        h("tbody", {}, page.checkpoints.map(c => h("tr", { "data-checkpoint": c.key },
          h("td", { class: "mono" }, c.key), h("td", { class: "num" }, fmtBytes(c.size_bytes)),
          h("td", {}, fmtTime(c.created_at)),
          h("td", {}, h("button", { class: "secondary", onclick: async () => {
            const bytes = await api("GET", instPath(tenant, id, "/checkpoints/" + enc(c.key)),
                                    { raw: true });
            out.hidden = false;
            out.textContent = `${c.key} (${fmtBytes(bytes.length)}): ${preview(bytes)}`;
          } }, "Preview")))))), out);
  }

  async function loadLogs() {
    const text = await api("GET", instPath(tenant, id, "/logs", { tail_bytes: 65536 }));
    logs.textContent = text || "(empty)";
  }

  async function refresh() {
    inst = await api("GET", instPath(tenant, id));
    drawHead();
    tl.replaceChildren(timeline(inst, events));
    await Promise.all([loadCheckpoints(), loadLogs()]);
  }

  drawHead();
  let cursor = 0;
  try {
    for (;;) { // the whole log so far
      const page = await api("GET", instPath(tenant, id, "/events", { limit: 1000,
                                                                      cursor: cursor || undefined }));
      addEvents(page.events);
      if (page.events.length) cursor = page.events[page.events.length - 1].id;
      if (!page.next_cursor) break;
    }
    await Promise.all([loadCheckpoints(), loadLogs()]);
  } catch (e) { problem.replaceChildren(errorBox(e)); }

  // follow: each event poll waits up to 25 s for the next event (a long poll, ?wait=)
  const abort = new AbortController();
  cleanup.push(() => abort.abort());
  (async () => {
    while (!abort.signal.aborted) {
      try {
        const page = await api("GET", instPath(tenant, id, "/events", {
          cursor: cursor || undefined, wait: "25s", limit: 1000 }), { signal: abort.signal });
        if (page.events.length) {
          cursor = page.events[page.events.length - 1].id;
          addEvents(page.events);
          await refresh();
        } else if (!ENDED.has(inst.status)) {
          await loadLogs();
        }
      } catch (e) {
        if (abort.signal.aborted) return;
        problem.replaceChildren(errorBox(e));
        await new Promise(r => setTimeout(r, 2000)); // the daemon is away: try again later
      }
    }
  })();
  // the log of a running program grows without events: read again every 2 s while it runs
  const tail = async () => {
    if (!ENDED.has(inst.status)) await loadLogs().catch(() => {});
    later(tail, 2000);
  };
  later(tail, 2000);
}

// ---- images -------------------------------------------------------------------------------

async function viewImages(view, params) {
  const problem = h("div");
  const rows = h("tbody", { id: "image-rows" });
  const progress = h("progress", { id: "upload-progress", max: 100, value: 0, hidden: true });
  const form = h("form", { class: "filters card", id: "upload" },
    h("label", {}, "Tenant", h("input", { name: "tenant", required: true,
                                          value: params.tenant || "" })),
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h("label", {}, "Runner", h("select", { name: "runner" },
      h("option", { value: "oci" }, "oci"), h("option", { value: "native" }, "native"))),
    h("label", {}, "Description", h("input", { name: "description" })),
    h("label", {}, "Program", h("input", { name: "file", type: "file", required: true })),
    h("button", { type: "submit" }, "Upload"), progress);
  view.replaceChildren(h("h1", {}, "Images"), h("h2", {}, "Register a version"), form, problem,
    h("h2", {}, "Versions"),
    h("table", { id: "images" }, h("thead", {}, h("tr", {},
      ["Name", "Version", "Tenant", "Runner", "Size", "SHA-256", "Labels", "Registered", ""]
        .map(t => h("th", {}, t)))), rows));

  async function load() {
    try {
      const page = await api("GET", "/api/v1/images" + query({ limit: 500 }));
      rows.replaceChildren(...page.images.map(i => h("tr", { "data-image": i.image_id },
        h("td", {}, i.name), h("td", { class: "num" }, i.version), h("td", {}, i.tenant_id),
        h("td", {}, i.runner_type), h("td", { class: "num" }, fmtBytes(i.size_bytes)),
        h("td", { class: "mono", title: i.sha256 }, i.sha256.slice(0, 16) + "…"),
        h("td", {}, Object.entries(i.labels || {}).map(([k, v]) => `${k}=${v}`).join(", ")),
        h("td", {}, fmtTime(i.created_at)),
        h("td", {}, h("button", { class: "secondary", onclick: async () => {
          if (!await confirmDialog(`Delete ${i.name} version ${i.version}?`)) return;
          try { await api("DELETE", `/api/v1/images/${enc(i.image_id)}` +
                          query({ tenant_id: i.tenant_id })); await load(); }
          catch (e) { problem.replaceChildren(errorBox(e)); }
        } }, "Delete")))));
    } catch (e) { problem.replaceChildren(errorBox(e)); }
  }

  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const f = new FormData(form);
    const file = f.get("file");
    // XMLHttpRequest, for the upload's progress (fetch reports none)
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/images" + query({ name: f.get("name"), tenant_id: f.get("tenant"),
      runner_type: f.get("runner"), description: f.get("description") }));
    const key = sessionStorage.getItem(KEY);
    if (key) xhr.setRequestHeader("Authorization", "Bearer " + key);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    progress.hidden = false;
    xhr.upload.onprogress = e => { if (e.lengthComputable) progress.value = 100 * e.loaded / e.total; };
    xhr.onload = async () => {
      progress.hidden = true;
      if (xhr.status === 201) {
        const img = JSON.parse(xhr.responseText);
        problem.replaceChildren(h("p", { class: "note", id: "upload-done" },
          `registered ${img.name} version ${img.version} (${img.image_id})`));
        form.reset();
        await load();
      } else {
        let msg = `upload failed: HTTP ${xhr.status}`;
        try { msg = JSON.parse(xhr.responseText).error.message + ` (HTTP ${xhr.status})`; } catch (_) {}
        problem.replaceChildren(errorBox(new Error(msg)));
      }
    };
    xhr.onerror = () => { progress.hidden = true;
                          problem.replaceChildren(errorBox(new Error("upload failed"))); };
    xhr.send(file);
  });
  await load();
}

// ---- tenant metrics -----------------------------------------------------------------------

function metricsChart(buckets) {
  const W = 1000, H = 260, L = 50, B = 30, T = 10;
  const n = buckets.length, bw = (W - L - 10) / Math.max(n, 1);
  const maxCount = Math.max(1, ...buckets.map(b => b.invocation_count));
  const maxDur = Math.max(1, ...buckets.map(b => b.max_duration_ms || 0));
  const y = v => T + (H - T - B) * (1 - v / maxCount);
  const svg = h("svg", { class: "chart", id: "metrics-chart", viewBox: `0 0 ${W} ${H}`,
                         role: "img", "aria-label": "invocations per bucket" });
  buckets.forEach((b, i) => {
    let base = 0;
    for (const [k, cls] of [["success_count", "bar-ok"], ["failure_count", "bar-bad"],
                            ["cancelled_count", "bar-cancel"]]) {
      if (!b[k]) continue;
      svg.append(h("rect", { class: cls, x: L + i * bw + 1, width: Math.max(1, bw - 2),
                             y: y(base + b[k]), height: y(base) - y(base + b[k]),
                             "data-bucket": b.time },
                   h("title", {}, `${fmtTime(b.time)}: ${b[k]} ${k.replace("_count", "")}`)));
      base += b[k];
    }
  });
  const pts = buckets.map((b, i) => b.avg_duration_ms === null ? null :
    `${L + (i + .5) * bw},${T + (H - T - B) * (1 - b.avg_duration_ms / maxDur)}`).filter(Boolean);
  if (pts.length) svg.append(h("polyline", { class: "line-duration", points: pts.join(" ") },
                               h("title", {}, "average duration")));
  svg.append(h("text", { class: "tl-axis", x: 2, y: T + 10 }, String(maxCount)),
             h("text", { class: "tl-axis", x: 2, y: H - B }, "0"));
  [0, Math.floor(n / 2), n - 1].filter((v, i, a) => v >= 0 && a.indexOf(v) === i).forEach(i =>
    svg.append(h("text", { class: "tl-axis", x: L + (i + .5) * bw, y: H - 10,
                           "text-anchor": i === 0 ? "start" : i === n - 1 ? "end" : "middle" },
                 fmtTime(buckets[i].time))));
  return svg;
}

// Peak memory per bucket: the maximum as a bar, the average as a line.
function memoryChart(buckets) {
  const W = 1000, H = 140, L = 50, B = 20, T = 10;
  const n = buckets.length, bw = (W - L - 10) / Math.max(n, 1);
  const top = Math.max(1, ...buckets.map(b => b.max_memory_bytes || 0));
  const y = v => T + (H - T - B) * (1 - v / top);
  const svg = h("svg", { class: "chart", id: "memory-chart", viewBox: `0 0 ${W} ${H}`,
                         role: "img", "aria-label": "peak memory per bucket" });
  buckets.forEach((b, i) => {
    if (b.max_memory_bytes === null) return;
    svg.append(h("rect", { class: "bar-memory", x: L + i * bw + 1, width: Math.max(1, bw - 2),
                           y: y(b.max_memory_bytes), height: H - B - y(b.max_memory_bytes),
                           "data-bucket": b.time },
                 h("title", {}, `${fmtTime(b.time)}: at most ${fmtBytes(b.max_memory_bytes)}, ` +
                                `${fmtBytes(b.avg_memory_bytes)} on average`)));
  });
  const pts = buckets.map((b, i) => b.avg_memory_bytes === null ? null :
    `${L + (i + .5) * bw},${y(b.avg_memory_bytes)}`).filter(Boolean);
  if (pts.length > 1) svg.append(h("polyline", { class: "line-duration", points: pts.join(" ") }));
  svg.append(h("text", { class: "tl-axis", x: 2, y: T + 10 }, fmtBytes(top)),
             h("text", { class: "tl-axis", x: 2, y: H - B }, "0"));
  return svg;
}

async function viewMetrics(view, params) {
  const gran = params.granularity || "hour";
  const days = Number(params.days || (gran === "day" ? 30 : 1));
  const form = h("form", { class: "filters", id: "metrics-form" },
    h("label", {}, "Tenant", h("input", { name: "tenant", required: true, value: params.tenant || "" })),
    h("label", {}, "Buckets", h("select", { name: "granularity" },
      ["hour", "day"].map(g => h("option", { value: g, selected: g === gran }, g)))),
    h("label", {}, "Days back", h("input", { name: "days", type: "number", min: 1, max: 365,
                                            value: days })),
    h("button", { type: "submit" }, "Show"));
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const f = new FormData(form);
    location.hash = "#/metrics" + query({ tenant: f.get("tenant"),
      granularity: f.get("granularity"), days: f.get("days") });
  });
  const out = h("div", { id: "metrics" });
  view.replaceChildren(h("h1", {}, "Tenant metrics"), form, out);
  if (!params.tenant) {
    out.append(h("p", { class: "note" }, "Name a tenant."));
    return;
  }
  try {
    const end = new Date();
    const start = new Date(end.getTime() - days * 86400000);
    const m = await api("GET", `/api/v1/tenants/${enc(params.tenant)}/metrics` + query({
      granularity: gran, start: start.toISOString(), end: end.toISOString() }));
    const sum = k => m.buckets.reduce((a, b) => a + b[k], 0);
    const inv = sum("invocation_count");
    const maxMem = Math.max(0, ...m.buckets.map(b => b.max_memory_bytes || 0));
    out.append(h("div", { class: "card", id: "metrics-summary" }, h("dl", { class: "grid" },
      h("dt", {}, "Ended"), h("dd", { id: "metrics-total" }, inv),
      h("dt", {}, "Completed"), h("dd", {}, sum("success_count")),
      h("dt", {}, "Failed"), h("dd", {}, sum("failure_count")),
      h("dt", {}, "Cancelled"), h("dd", {}, sum("cancelled_count")),
      h("dt", {}, "Success rate"), h("dd", {}, inv ? (100 * sum("success_count") / inv).toFixed(1) + " %" : "-"),
      h("dt", {}, "Peak memory"), h("dd", {}, maxMem ? fmtBytes(maxMem) : "-"))),
      h("div", { class: "legend" }, h("span", {}, h("i", { class: "sw-ok" }), "completed"),
        h("span", {}, h("i", { class: "sw-bad" }), "failed"),
        h("span", {}, h("i", { class: "sw-cancel" }), "cancelled"),
        h("span", {}, h("i", { class: "sw-duration" }), "average duration")),
      metricsChart(m.buckets),
      h("h2", {}, "Peak memory"), memoryChart(m.buckets),
      h("table", { id: "metrics-table" }, h("thead", {}, h("tr", {},
        ["Bucket", "Ended", "OK", "Failed", "Cancelled", "Rate", "Avg", "Min", "Max", "Avg mem",
         "Max mem"].map(t => h("th", {}, t)))),
        h("tbody", {}, m.buckets.filter(b => b.invocation_count).map(b => h("tr", {},
          h("td", {}, fmtTime(b.time)), h("td", { class: "num" }, b.invocation_count),
          h("td", { class: "num" }, b.success_count), h("td", { class: "num" }, b.failure_count),
          h("td", { class: "num" }, b.cancelled_count),
          h("td", { class: "num" }, b.success_rate_percent === null ? "-" : b.success_rate_percent.toFixed(1) + " %"),
          h("td", { class: "num" }, fmtMs(b.avg_duration_ms)), h("td", { class: "num" }, fmtMs(b.min_duration_ms)),
          h("td", { class: "num" }, fmtMs(b.max_duration_ms)),
          h("td", { class: "num" }, fmtBytes(b.avg_memory_bytes)),
          h("td", { class: "num" }, fmtBytes(b.max_memory_bytes)))))));
  } catch (e) { out.append(errorBox(e)); }
}

// ---- health -------------------------------------------------------------------------------

async function viewHealth(view) {
  const out = h("div", { id: "health" });
  view.replaceChildren(h("h1", {}, "Health"), out);
  let health;
  try {
    health = await fetch("/api/v1/health").then(r => r.json());
  } catch (e) { out.append(errorBox(e)); return; }
  const metrics = await fetch("/metrics").then(r => r.text()).catch(() => "");
  const value = (name, filter = "") => metrics.split("\n")
    .filter(l => l.startsWith(name) && l.includes(filter) && !l.startsWith("#"))
    .reduce((a, l) => a + Number(l.split(" ").pop()), 0);
  const s = health.store || {};
  out.append(h("div", { class: "card" }, h("dl", { class: "grid" },
    h("dt", {}, "Status"), h("dd", { id: "health-status" }, badge(health.status === "ok" ? "completed" : "failed"),
      " ", health.status),
    h("dt", {}, "Version"), h("dd", {}, health.version),
    h("dt", {}, "Daemon"), h("dd", {}, health.daemon || "-"),
    h("dt", {}, "Up"), h("dd", {}, fmtMs(health.uptime_ms)),
    h("dt", {}, "Store"), h("dd", {}, `${s.backend}, ${s.status}, schema ${s.schema_version}` +
                                        (s.error ? ": " + s.error : "")))),
    h("h2", {}, "Key metrics"),
    h("table", { id: "health-metrics" }, h("tbody", {},
      [["Requests served", value("runtara_http_requests_total")],
       ["Requests answered 5xx", value("runtara_http_requests_total", 'status="5')],
       ["Long polls waiting", value("runtara_long_polls_waiting")],
       ["Images stored", value("runtara_images ") || value("runtara_images{")],
       ["Connections refused", value("runtara_http_connections_refused_total")],
       ["Resident memory", fmtBytes(value("process_resident_memory_bytes"))]]
        .map(([k, v]) => h("tr", {}, h("th", {}, k), h("td", { class: "num" }, v))))));
}

// ---- the router ---------------------------------------------------------------------------

async function render() {
  for (const stop of cleanup) stop();
  cleanup = [];
  const { parts, params } = routeParams();
  const view = $("#view");
  document.querySelectorAll("header nav a").forEach(a =>
    a.classList.toggle("active", a.dataset.nav === (parts[0] || "instances")));
  try {
    if (parts[0] === "instances" && parts.length === 3) await viewInstance(view, parts[1], parts[2]);
    else if (parts[0] === "images") await viewImages(view, params);
    else if (parts[0] === "metrics") await viewMetrics(view, params);
    else if (parts[0] === "health") await viewHealth(view);
    else await viewInstances(view, params);
  } catch (e) { view.append(errorBox(e)); }
}

window.addEventListener("hashchange", render);
document.addEventListener("DOMContentLoaded", () => { setupKey(); render(); });
