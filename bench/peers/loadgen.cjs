// The one load generator of the peers benchmark (bench/scenarios/peers.py): it drives either
// system with the same phases and measures both the same way.
//
//   node loadgen.cjs SYSTEM BASE_URL TAG PIDS [IMAGE_ID]
//
// SYSTEM is "runtara" (POST /api/v1/instances, then long-poll GET /api/v1/instances/ID?wait= until
// the instance has ended) or "restate" (POST /e2e/ID/run on the ingress, which answers with the
// workflow's result). PIDS names the processes whose CPU and memory count, as
// "name=pid,name=pid". Phases come from PHASES ("warmup:100:8,serial:200:1,load:2000:32": name,
// workflows, in flight). Every result is checked. Prints one line of JSON: per phase, workflows,
// seconds, workflows/s, p50 and p99 (ms), and CPU (ms) per named process (its own and its reaped
// children's), for this load generator and for the whole machine; and each process's peak RSS.
'use strict';
const fs = require('fs');
const http = require('http');

const [system, base, tag, pidsArg, imageId] = process.argv.slice(2);
const url = new URL(base);
const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
const pids = Object.fromEntries((pidsArg || '').split(',').filter(Boolean).map((kv) => {
  const [name, pid] = kv.split('=');
  return [name, Number(pid)];
}));
const TICK_MS = 10; // USER_HZ is 100 on Linux

function request(method, path, body) {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({
      host: url.hostname, port: url.port, agent, method, path,
      headers: data === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    req.end(data);
  });
}

function check(cond, what) {
  if (!cond) throw new Error(what);
}

async function runtaraOne(id) {
  const r = await request('POST', '/api/v1/instances', { image_id: imageId, instance_id: id });
  check(r.status === 201, `start of ${id}: HTTP ${r.status} ${r.text}`);
  for (;;) {
    const g = await request('GET', `/api/v1/instances/${id}?wait=30s`);
    check(g.status === 200, `status of ${id}: HTTP ${g.status} ${g.text}`);
    const inst = JSON.parse(g.text);
    if (['completed', 'failed', 'cancelled'].includes(inst.status)) {
      check(inst.status === 'completed', `${id} ended ${inst.status}: ${g.text}`);
      return;
    }
  }
}

async function restateOne(id) {
  const r = await request('POST', `/e2e/${id}/run`, {});
  check(r.status === 200, `run of ${id}: HTTP ${r.status} ${r.text}`);
  check(JSON.parse(r.text).steps === 10, `${id}: unexpected result ${r.text}`);
}

const runOne = system === 'runtara' ? runtaraOne : restateOne;

function procCpuMs(pid) {
  const f = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(')').pop().trim().split(/\s+/);
  return (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) * TICK_MS;
}

// A process's CPU with that of its live children (their own and what they reaped): the daemon's
// shims are the children of its zygote, alive all along; the same sum for every process measured.
function treeCpuMs(pid) {
  let total = procCpuMs(pid);
  let tasks = [];
  try { tasks = fs.readdirSync(`/proc/${pid}/task`); } catch (e) { return total; }
  for (const t of tasks) {
    let kids = [];
    try { kids = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/).filter(Boolean); } catch (e) { continue; }
    for (const k of kids) {
      try { total += procCpuMs(k); } catch (e) { /* it ended meanwhile: its parent has it */ }
    }
  }
  return total;
}

function machineCpuMs() {
  const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].split(/\s+/).slice(1).map(Number);
  return (f[0] + f[1] + f[2] + f[5] + f[6] + f[7]) * TICK_MS;
}

function cpuNow() {
  const out = { machine: machineCpuMs(), loadgen: (process.cpuUsage().user + process.cpuUsage().system) / 1000 };
  for (const [name, pid] of Object.entries(pids)) out[name] = treeCpuMs(pid);
  return out;
}

const peakRss = {};
function sampleRss() {
  for (const [name, pid] of Object.entries(pids)) {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) peakRss[name] = Math.max(peakRss[name] || 0, Number(m[1]) / 1024);
  }
}

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function phase(name, n, inFlight) {
  const lat = [];
  let next = 0;
  const cpu0 = cpuNow();
  const t0 = process.hrtime.bigint();
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const s = process.hrtime.bigint();
      await runOne(`${tag}-${name}-${i}`);
      lat.push(Number(process.hrtime.bigint() - s) / 1e6);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu1 = cpuNow();
  lat.sort((a, b) => a - b);
  const cpu = {};
  for (const k of Object.keys(cpu1)) cpu[k] = cpu1[k] - cpu0[k];
  return { workflows: n, in_flight: inFlight, seconds: secs, rate: n / secs, p50: pct(lat, 50), p99: pct(lat, 99), cpu };
}

(async () => {
  const timer = setInterval(sampleRss, 200);
  sampleRss();
  const out = { system, phases: {} };
  for (const spec of (process.env.PHASES || 'warmup:100:8,serial:200:1,load:2000:32').split(',')) {
    const [name, n, c] = spec.split(':');
    out.phases[name] = await phase(name, Number(n), Number(c));
  }
  clearInterval(timer);
  sampleRss();
  out.peak_rss_mib = peakRss;
  agent.destroy();
  process.stdout.write(`${JSON.stringify(out)}\n`);
})().catch((e) => {
  process.stderr.write(`loadgen: ${e.message}\n`);
  process.exit(1);
});
