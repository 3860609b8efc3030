"""Wake accuracy of durable sleeps.

Measured: N instances suspended in a durable sleep, with deadlines spread evenly over 10 s,
left in the store by a daemon that stopped (seeded straight into its database, so the scenario
does not wait for N processes to fall asleep first). The next daemon rebuilds its wake heap from
the store and claims each wake-up as its deadline passes. The figure is each instance's lateness
as its `woken` event records it: the claim's commit time minus the deadline, p50/p99/max, for
10,000 and 100,000 sleepers (QUICK: 2,000 and 20,000). The relaunches that follow the claims use
the mock runner; they queue behind the claims, which is the point: a burst of relaunches must not
make the next wake-ups late.

Baseline: none. The physical limit is 0 ms."""
import sqlite3
import time

from benchlib import Row, at_most, pct, seed_sleepers, wait_until

SPREAD = 10.0  # seconds


def lateness(ctx, n):
    with ctx.daemon(RUNTARA_RUNNER="mock", RUNTARA_RETENTION_SECS="0") as d:
        first = int((time.time() + 5 + n / 50_000) * 1e6)  # after the seeding and the restart
        seed_sleepers(d, n, first, int(SPREAD * 1e6))
        d.start()
        asleep = "/api/v1/instances?status=suspended&limit=1"  # a claim records its woken event
        wait_until(lambda: d.request("GET", asleep).json()["total"] == 0, SPREAD + 120,
                   "every wake-up", interval=0.25)
        d.stop()  # the daemon holds its database alone
        db = sqlite3.connect(f"file:{d.data_dir}/runtara.db?mode=ro", uri=True)
        late = [r[0] for r in db.execute(
            "SELECT json_extract(payload, '$.late_ms') FROM events WHERE type = 'woken'")]
        db.close()
    assert len(late) == n, (len(late), n)
    return late


def run(ctx):
    rows = []
    for n in (ctx.pick(2_000, 10_000), ctx.pick(20_000, 100_000)):
        late = lateness(ctx, n)
        s = ctx.cdf(f"{n:,} sleepers", late)
        ctx.log(f"{n} sleepers: p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, "
                f"max {s['max']:.1f} ms")
        rows += [Row(f"lateness p50, {n:,} sleepers", pct(late, 50), "ms"),
                 Row(f"lateness p99, {n:,} sleepers", pct(late, 99), "ms", None,
                     [at_most(20)]),
                 Row(f"lateness max, {n:,} sleepers", max(late), "ms")]
    ctx.note(f"deadlines spread evenly over {SPREAD:.0f} s; lateness = claim commit - deadline "
             "(the woken event's late_ms); relaunches on the mock runner")
    return rows
