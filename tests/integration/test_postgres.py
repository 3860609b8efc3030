#!/usr/bin/env python3
"""The PostgreSQL store against a real server (tests/integration/pg.py: TEST_DATABASE_URL, or a
throwaway cluster): so far its schema, brought up to date by `runtara-environment migrate`."""
import concurrent.futures
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import pg  # noqa: E402
from harness import DAEMON, main, test  # noqa: E402

TABLES = ["checkpoints", "custom_signals", "events", "images", "instances", "schema_migrations",
          "signals"]


def migrate(url, **env):
    e = dict(os.environ, RUNTARA_DATABASE_URL=url, **env)
    return subprocess.run([DAEMON, "migrate"], env=e, capture_output=True, text=True, timeout=60)


@test
def migrate_applies_the_schema_once_while_daemons_race():
    """Four processes migrate one empty database at once: the advisory lock lets one apply each
    migration, and the others find it done."""
    url = pg.fresh_database()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        runs = list(ex.map(lambda _: migrate(url), range(4)))
    for p in runs:
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("postgres schema at version "), p.stdout
    version = int(runs[0].stdout.split()[4])
    assert version >= 1
    rows = pg.psql(url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows.splitlines()[0] == "1|initial" and len(rows.splitlines()) == version, rows
    tables = pg.psql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                          "ORDER BY tablename").split()
    assert tables == TABLES, tables
    # the types the issue asks for: times, bytes, JSON, statuses
    cols = dict(line.split("|") for line in pg.psql(
        url, "SELECT table_name || '.' || column_name, udt_name FROM information_schema.columns "
             "WHERE table_schema = 'public'").splitlines())
    assert cols["instances.created_at"] == "timestamptz", cols
    assert cols["checkpoints.data"] == "bytea", cols
    assert cols["instances.input"] == "json", cols
    assert cols["instances.status"] == "instance_status", cols
    # and again: nothing to do
    p = migrate(url)
    assert p.returncode == 0 and p.stdout == runs[0].stdout, p


@test
def migrate_refuses_a_schema_newer_than_it_knows():
    url = pg.fresh_database()
    assert migrate(url).returncode == 0
    pg.psql(url, "INSERT INTO schema_migrations (version, name) VALUES (999, 'from_the_future')")
    p = migrate(url)
    assert p.returncode == 1, p
    assert "database schema version 999 is newer than this binary supports" in p.stderr, p.stderr


@test
def an_unreachable_server_is_named_and_its_password_never_shown():
    p = migrate("postgresql://runtara:s3cret@/runtara?host=/nonexistent/dir")
    assert p.returncode == 1, p
    assert "could not connect to PostgreSQL:" in p.stderr and "/nonexistent/dir" in p.stderr, \
        p.stderr
    assert "hint: check RUNTARA_DATABASE_URL" in p.stderr, p.stderr
    assert "s3cret" not in p.stderr, p.stderr
    # a URL libpq cannot parse stops it before any connection, quoted nowhere
    p = migrate("postgresql://runtara:s3cret@db/runtara?bogus=1")
    assert p.returncode == 2 and "invalid RUNTARA_DATABASE_URL" in p.stderr, p
    assert "s3cret" not in p.stderr, p.stderr


if __name__ == "__main__":
    main()
