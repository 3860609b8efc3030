#!/usr/bin/env python3
"""Run the benchmark scenarios against a release build: print a table of every figure against its
baseline and target, write results/latest.json and draw the plots (docs/benchmarks.md).

usage: bench/run.py [--build DIR] [--quick] [--out DIR] [--data DIR] [SCENARIO ...]
       bench/run.py --show FILE.json [--markdown]      print the table of a saved run

Scenarios are the modules bench/scenarios/<name>.py (not starting with "_"), run in the order of
their ORDER attribute, then name; naming some runs only those. Each exposes run(ctx) returning
benchlib.Row objects (see benchlib.py). The run exits 0 when every scenario ran, whether or not
its targets were met (it is a measurement; the misses are listed at the end), and 1 when a
scenario failed to run."""
import argparse
import datetime
import fcntl
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(ROOT, "build-release"),
                   help="release build directory (default: build-release)")
    p.add_argument("--quick", action="store_true", help="shorter runs (under two minutes)")
    p.add_argument("--out", default=os.path.join(HERE, "results"),
                   help="where latest.json and the plots go (default: bench/results)")
    p.add_argument("--data", help="where the daemons' data directories go (default: OUT/data)")
    p.add_argument("--show", metavar="JSON", help="print the table of a saved run and exit")
    p.add_argument("--markdown", action="store_true", help="with --show: as a Markdown table")
    p.add_argument("scenarios", nargs="*", help="run only these scenarios")
    return p.parse_args()


def discover(only):
    """The scenario modules, imported, in run order."""
    d = os.path.join(HERE, "scenarios")
    mods = []
    for f in sorted(os.listdir(d)):
        name, ext = os.path.splitext(f)
        if ext != ".py" or name.startswith("_") or (only and name not in only):
            continue
        spec = importlib.util.spec_from_file_location(f"scenario_{name}", os.path.join(d, f))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if not callable(getattr(mod, "run", None)):
            raise SystemExit(f"bench: {f} has no run(ctx)")
        mod.NAME = name
        mods.append(mod)
    unknown = set(only) - {m.NAME for m in mods}
    if unknown:
        raise SystemExit(f"bench: no such scenario: {', '.join(sorted(unknown))}")
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 50), m.NAME))


def title_of(mod):
    return (mod.__doc__ or mod.NAME).strip().split("\n")[0].rstrip(".")


def build_options(build):
    """The meson options that make figures comparable, read from the build's introspection."""
    path = os.path.join(build, "meson-info", "intro-buildoptions.json")
    with open(path) as f:
        opts = {o["name"]: o["value"] for o in json.load(f)}
    keys = ("buildtype", "b_ndebug", "b_sanitize", "werror", "fault_injection")
    return {k: opts.get(k) for k in keys}


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return ""


def filesystem_of(path):
    """The type of the filesystem holding path (the data directories live under the temporary
    directory: a tmpfs there would make every fsync free)."""
    best, fstype = "", "?"
    with open("/proc/self/mounts") as f:
        for line in f:
            mnt, kind = line.split()[1:3]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best):
                best, fstype = mnt, kind
    return fstype


# <linux/fs.h>: the inode flags' ioctls (their argument is an int, whatever the size in their
# number says) and the flag of `chattr +T`.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000


def data_root(path):
    """Make path the parent of every data directory of the run (the temporary directory of this
    process and its children: harness.Daemon makes its data directories there), flagged as a top
    of directory hierarchies (FS_TOPDIR_FL, `chattr +T`) where the filesystem has the flag (ext4).
    Returns whether it could be flagged.

    Why: ext4 without a journal (the reference machine's) walks, at every inode it allocates, over
    the inodes of the block group deleted in the last 1 to 6 minutes. Each scenario's daemon
    creates a few thousand files and removes them at its end, and so do the tests and CI clones
    that share /tmp; a daemon started next in the same group then pays 300 to 700 us per file
    instead of ~20 us, which moved the loop's CPU per workflow 4x between runs (docs/benchmarks.md,
    "The disk's history"). Under a flagged parent ext4 places each new data directory as it places
    a top-level one, in a group with the fewest directories, away from the groups just emptied."""
    os.makedirs(path, exist_ok=True)
    flagged = False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            buf = bytearray(8)
            fcntl.ioctl(fd, FS_IOC_GETFLAGS, buf)
            flags = int.from_bytes(buf[:4], "little") | FS_TOPDIR_FL
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags.to_bytes(4, "little") + bytes(4))
            flagged = True
        finally:
            os.close(fd)
    except OSError:
        pass  # not ext4, or not ours to flag: the directories go where the filesystem puts them
    tempfile.tempdir = path
    os.environ["TMPDIR"] = path
    return flagged


def inode_cost_us(parent, n=100):
    """Microseconds to create one inode under parent, as a run directory's are created (a
    directory, then a file in it), measured on n of each in a directory of its own. The
    directory is kept until the run ends (removing it now would slow the next creations down, as
    data_root() explains); returns (microseconds, the directory to remove)."""
    d = tempfile.mkdtemp(dir=parent, prefix="inode-probe-")
    t = time.perf_counter()
    for i in range(n):
        os.mkdir(os.path.join(d, str(i)))
        os.close(os.open(os.path.join(d, str(i), "f"), os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC,
                         0o600))
    return (time.perf_counter() - t) / (2 * n) * 1e6, d


def host_info():
    model = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "mem_mib": mem_kib // 1024, "python": platform.python_version(),
            "tmp_fs": filesystem_of(os.path.realpath(tempfile.gettempdir()))}


def run_scenario(mod, args, benchlib, plots):
    ctx = benchlib.Context(mod.NAME, args.build, args.quick, args.out)
    title = title_of(mod)
    print(f"== {mod.NAME}: {title}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    result = {"name": mod.NAME, "title": title, "rows": [], "error": None}
    rows = []
    try:
        rows = mod.run(ctx)
    except Exception:
        result["error"] = traceback.format_exc()
        print(result["error"], file=sys.stderr)
    result["duration_secs"] = round(time.monotonic() - t0, 1)
    result["rows"] = [r.to_json() for r in rows]
    result["notes"] = ctx.notes
    result["distributions"] = ctx.stats
    if plots.available():
        try:
            png = plots.draw(args.out, mod.NAME, title, ctx)
            result["plot"] = os.path.basename(png) if png else None
        except Exception as e:  # a plot is a nicety: keep the figures
            print(f"  [{mod.NAME}] plot failed: {e}", file=sys.stderr)
    return result, rows


HEAD = ("scenario", "figure", "value", "baseline", "ratio", "target", "pass")


def table_lines(results, benchlib):
    lines = []
    for res in results:
        for r in res["rows"]:
            unit = f" {r['unit']}" if r["unit"] else ""
            base = "-" if r["baseline"] is None else benchlib.fmt(r["baseline"]) + unit
            passed = {None: "-", True: "pass", False: "FAIL"}[r["passed"]]
            lines.append((res["name"], r["figure"], benchlib.fmt(r["value"]) + unit, base,
                          benchlib.fmt_ratio(r["ratio"]),
                          ", ".join(t["text"] for t in r["targets"]) or "report", passed))
        if res["error"]:
            lines.append((res["name"], "(did not run: see the error above)", "", "", "", "",
                          "ERROR"))
    return lines


def print_markdown(results, benchlib):
    print("| " + " | ".join(HEAD) + " |")
    print("|" + "|".join("---:" if i in (2, 3, 4) else "---" for i in range(len(HEAD))) + "|")
    for line in table_lines(results, benchlib):
        print("| " + " | ".join(c.replace("|", "\\|") for c in line) + " |")


def print_table(results, benchlib):
    lines = table_lines(results, benchlib)
    widths = [max(len(x[i]) for x in [HEAD] + lines) for i in range(len(HEAD))]
    right = {2, 3, 4}
    for line in [HEAD, tuple("-" * w for w in widths)] + lines:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths))]
        print("  ".join(cells).rstrip())
    for res in results:
        for n in res["notes"]:
            print(f"  {res['name']}: {n}")


def misses_of(results, benchlib):
    out = []
    for res in results:
        for r in res["rows"]:
            for t in r["targets"]:
                if not t["passed"]:
                    unit = f" {r['unit']}" if r["unit"] else ""
                    base = ("" if r["baseline"] is None
                            else f" (baseline {benchlib.fmt(r['baseline'])}{unit})")
                    out.append(f"{res['name']}: {r['figure']} = {benchlib.fmt(r['value'])}{unit}"
                               f"{base}, target {t['text']}")
    return out


def main():
    args = parse_args()
    if args.show:
        sys.path.insert(0, HERE)
        import benchlib
        with open(args.show) as f:
            doc = json.load(f)
        (print_markdown if args.markdown else print_table)(doc["scenarios"], benchlib)
        return 0
    args.build = os.path.abspath(args.build)
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    os.environ["RUNTARA_BUILD_DIR"] = args.build
    data = os.path.abspath(args.data or os.path.join(args.out, "data"))
    flagged = data_root(data)
    inode_us, probe_dir = inode_cost_us(data)
    sys.path[:0] = [HERE, os.path.join(ROOT, "tests", "integration")]
    import benchlib
    import plots

    opts = build_options(args.build)
    release = (opts["buildtype"] == "release" and opts["b_ndebug"] in ("true", True)
               and opts["fault_injection"] is False and opts["b_sanitize"] in ("none", "", None))
    if not release:
        print(f"bench: warning: {args.build} is not a release build ({opts}); "
              "figures are not comparable", file=sys.stderr)
    mods = discover(args.scenarios)
    doc = {"version": 1, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
               timespec="seconds"),
           "commit": sh("git", "rev-parse", "HEAD"), "dirty": bool(sh("git", "status",
                                                                       "--porcelain")),
           "quick": args.quick, "build": opts, "release": release, "host": host_info(),
           "load_before": list(os.getloadavg()), "scenarios": []}
    doc["host"].update(data_dir=data, data_dir_spread=flagged, inode_create_us=round(inode_us, 1))
    t0 = time.monotonic()
    for mod in mods:
        res, _ = run_scenario(mod, args, benchlib, plots)
        doc["scenarios"].append(res)
    doc["duration_secs"] = round(time.monotonic() - t0, 1)
    doc["load_after"] = list(os.getloadavg())
    shutil.rmtree(probe_dir, ignore_errors=True)
    doc["misses"] = misses_of(doc["scenarios"], benchlib)

    with open(os.path.join(args.out, "latest.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print()
    print_table(doc["scenarios"], benchlib)
    print(f"\n{'quick' if args.quick else 'full'} run of {len(mods)} scenarios in "
          f"{doc['duration_secs']:.0f} s on {doc['host']['cpus']} CPUs, load "
          f"{doc['load_before'][0]:.2f} before, {doc['load_after'][0]:.2f} after (figures are "
          f"noisy when other work shares the machine); {os.path.relpath(args.out, ROOT)}/"
          f"latest.json" + (" and plots" if plots.available() else ", no plots (no gnuplot)"))
    print(f"data directories under {data} ({doc['host']['tmp_fs']}"
          f"{', spread over the block groups' if flagged else ''}): {inode_us:.0f} us to create a "
          f"file there at the start (a quiet ext4: ~20 us)")
    if doc["misses"]:
        n = len(doc["misses"])
        print(f"\n{n} target{'' if n == 1 else 's'} missed:")
        for m in doc["misses"]:
            print(f"  MISS {m}")
    else:
        print("\nevery target met")
    errors = [r["name"] for r in doc["scenarios"] if r["error"]]
    if errors:
        print(f"\nscenarios that did not run: {', '.join(errors)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
