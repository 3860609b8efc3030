"""Durable checkpoints, PostgreSQL store.

Measured: the checkpoints scenario's load (64 instances of bench-probe, each saving N
checkpoints of 100 bytes on one keep-alive connection, released together by a barrier) against a
daemon whose store is PostgreSQL (RUNTARA_DATABASE_URL): a throwaway cluster this scenario
starts (scripts/pg-cluster.sh: PostgreSQL 15 of the machine, default settings, fsync and
synchronous_commit on, unix socket), a new database per daemon.

Baselines, on the same cluster in the same run:
- bare libpq: one connection inserting rows of 100 bytes, one INSERT per commit (autocommit),
  for a few seconds (bench/pg-baseline.c): what one durable commit per checkpoint costs without
  batching. Target: the daemon at least 3x this.
- pgbench running the daemon's own save statement (store-pg.c, checkpoint_save_sql: the
  checkpoint's insert, the instance's update, the "checkpoint" event, the signal read) on 8
  connections, one commit each (-c 8 -j 2, a custom script, -n), on a copy of the daemon's schema
  with 64 running instances: what the server does with that statement, concurrent, and its own
  group commit. Target: the daemon at least 0.8x this.

Skipped, with a line saying why, when PostgreSQL is not installed."""
import os
import re
import shutil
import subprocess
import sys
import tempfile

from benchlib import Row, ratio_at_least

sys.path.insert(0, os.path.dirname(__file__))
from checkpoints import INSTANCES, daemon_run  # noqa: E402  (the same load, scenarios/)

ORDER = 21


def cluster_start(tmp):
    import pg  # tests/integration/pg.py, on the path with the harness
    d = os.path.join(tmp, "cluster")
    out = subprocess.run([os.path.join(pg.ROOT, "scripts", "pg-cluster.sh"), "start", d],
                         capture_output=True, text=True, check=True)
    return d, out.stdout.strip()


def cluster_stop(d):
    import pg
    subprocess.run([os.path.join(pg.ROOT, "scripts", "pg-cluster.sh"), "stop", d],
                   capture_output=True)


def fresh(url, name):
    import pg
    pg.psql(url, f"CREATE DATABASE {name}")
    return pg.with_database(url, name)


def pg_count(url):
    import pg

    def count(_d):
        out = pg.psql(url, "SELECT COUNT(*), (extract(epoch from MAX(created_at)) * 1000000)"
                           "::bigint FROM checkpoints")
        n, last = out.split("|")
        return int(n), int(last)
    return count


def libpq_baseline(ctx, url, seconds):
    out = subprocess.run([ctx.tool("pg-baseline"), url, str(seconds)], capture_output=True,
                         text=True, check=True).stdout.split()
    n, took = int(out[0]), float(out[1])
    return n / took, [int(x) / 1000 for x in out[2:]]


# The daemon's save (src/store/store-pg.c, checkpoint_save_sql), as pgbench runs it: the
# instance of the client, a new key, 100 bytes, no token.
SAVE = (
    "\\set k random(1, 1000000000000)\n"
    "WITH ins AS (INSERT INTO checkpoints (instance_key, key, data, created_at) "
    "VALUES ('bench/c' || :client_id, 'k' || :k, convert_to(repeat('x', 100), 'UTF8'), now()) "
    "ON CONFLICT (instance_key, key) DO NOTHING RETURNING seq), "
    "upd AS (UPDATE instances SET checkpoint_id = 'k' || :k, updated_at = now(), "
    "heartbeat_at = now(), auto_restarts = 0 WHERE instance_key = 'bench/c' || :client_id "
    "AND EXISTS (SELECT 1 FROM ins) RETURNING 1), "
    "ev AS (INSERT INTO events (instance_key, type, subtype, created_at) "
    "SELECT 'bench/c' || :client_id, 'checkpoint', 'k' || :k, now() FROM upd) "
    "SELECT (SELECT count(*) FROM ins)::integer, (SELECT count(*) FROM upd)::integer, "
    "(SELECT data FROM checkpoints WHERE instance_key = 'bench/c' || :client_id AND key = 'k' || :k), "
    "(SELECT type::text FROM signals WHERE instance_key = 'bench/c' || :client_id);\n")


def pgbench(ctx, url, seconds, tmp):
    """pgbench running the daemon's save on a database the daemon's own migrate prepared."""
    env = dict(os.environ, RUNTARA_DATABASE_URL=url, DATA_DIR=os.path.join(tmp, "migrate"))
    subprocess.run([ctx.tool("runtara-environment"), "migrate"], env=env, check=True,
                   capture_output=True)
    import pg
    pg.psql(url, "INSERT INTO instances (instance_key, instance_id, tenant_id, image_id, status, "
                 "created_at) SELECT 'bench/c' || i, 'c' || i, 'bench', 'img', 'running', now() "
                 "FROM generate_series(0, 63) i")
    script = os.path.join(tmp, "save.sql")
    with open(script, "w") as f:
        f.write(SAVE)
    bindir = sorted(d for d in os.listdir("/usr/lib/postgresql"))[-1]
    out = subprocess.run([f"/usr/lib/postgresql/{bindir}/bin/pgbench", "-n", "-c", "8", "-j", "2",
                          "-T", str(seconds), "-f", script, url],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"tps = ([0-9.]+)", out)
    return float(m.group(1))


def run(ctx):
    if not shutil.which("psql") or not os.path.isdir("/usr/lib/postgresql"):
        print("checkpoints_pg: SKIPPED: PostgreSQL is not installed "
              "(scripts/install-deps.sh --bench installs it)", flush=True)
        return []
    per = ctx.pick(60, 300)
    tmp = tempfile.mkdtemp(prefix="runtara-bench-pg-")
    os.chmod(tmp, 0o755)
    d, admin = cluster_start(tmp)
    try:
        url = fresh(admin, "daemon")
        rate, lat = daemon_run(ctx, per, count=pg_count(url), RUNTARA_DATABASE_URL=url)
        ctx.log(f"daemon: {INSTANCES} x {per} checkpoints")
        burl = fresh(admin, "baseline")
        brate, blat = libpq_baseline(ctx, burl, ctx.pick(3, 6))
        ctx.log(f"bare libpq: {len(blat)} commits")
        prate = pgbench(ctx, fresh(admin, "pgbench"), ctx.pick(3, 6), tmp)
        ctx.log(f"pgbench: {prate:,.0f} tps")
    finally:
        cluster_stop(d)
        shutil.rmtree(tmp, ignore_errors=True)
    s = ctx.cdf(f"checkpoint save, {INSTANCES} concurrent, PostgreSQL (daemon)", lat)
    b = ctx.cdf("INSERT per commit, 1 libpq connection (baseline)", blat, baseline=True)
    ctx.note(f"{INSTANCES} instances x {per} checkpoints of 100 B on PostgreSQL (a throwaway "
             "cluster, default settings); baselines on the same cluster: bare libpq, one INSERT "
             "per commit on one connection; pgbench, the daemon's save statement on 8 "
             "connections")
    return [Row("PostgreSQL: durable checkpoints/s", rate, "/s", brate, [ratio_at_least(3)]),
            Row("PostgreSQL: checkpoints/s vs pgbench -c 8", rate, "/s", prate,
                [ratio_at_least(0.8)]),
            Row("PostgreSQL: checkpoint p50", s["p50"], "ms", b["p50"]),
            Row("PostgreSQL: checkpoint p99", s["p99"], "ms", b["p99"])]
