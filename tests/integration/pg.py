"""PostgreSQL for the integration tests: the server of TEST_DATABASE_URL (a role that may create
databases), or else a throwaway cluster started with scripts/pg-cluster.sh for the whole run and
stopped at exit. Each test gets a database of its own (fresh_database())."""
import atexit
import os
import shutil
import subprocess
import tempfile
import urllib.parse
import uuid

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
_admin_url = None


def admin_url():
    """The URL of a database on the server the tests use, starting a cluster if need be."""
    global _admin_url
    if _admin_url:
        return _admin_url
    _admin_url = os.environ.get("TEST_DATABASE_URL")
    if _admin_url:
        return _admin_url
    if not shutil.which("psql"):
        raise AssertionError("PostgreSQL is not installed and TEST_DATABASE_URL is not set; "
                             "hint: scripts/install-deps.sh installs it")
    top = tempfile.mkdtemp(prefix="runtara-pg-")
    os.chmod(top, 0o755)  # the server (user postgres, under root) makes its socket there
    d = os.path.join(top, "cluster")
    out = subprocess.run([os.path.join(ROOT, "scripts", "pg-cluster.sh"), "start", d],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"could not start a PostgreSQL cluster: {out.stderr}")

    def stop():
        subprocess.run([os.path.join(ROOT, "scripts", "pg-cluster.sh"), "stop", d],
                       capture_output=True)
        shutil.rmtree(top, ignore_errors=True)
    atexit.register(stop)
    _admin_url = out.stdout.strip()
    return _admin_url


def psql(url, sql):
    """Run sql on the database of url; its output, unaligned, without headers."""
    out = subprocess.run(["psql", "-X", "-v", "ON_ERROR_STOP=1", "-At", "-d", url, "-c", sql],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"psql: {out.stderr}")
    return out.stdout.strip()


def with_database(url, name):
    """url with its database replaced by name (a URL, or a keyword string)."""
    if "://" not in url:
        return f"{url} dbname={name}"
    p = urllib.parse.urlsplit(url)  # (urlunsplit would drop the // of an empty host)
    return f"{p.scheme}://{p.netloc}/{name}" + (f"?{p.query}" if p.query else "")


def fresh_database():
    """A new, empty database on the tests' server; its URL."""
    name = "rt_" + uuid.uuid4().hex[:12]
    psql(admin_url(), f"CREATE DATABASE {name}")
    return with_database(admin_url(), name)
