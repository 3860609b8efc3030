#!/usr/bin/env python3
"""Enforce the dependency direction of DESIGN §2 / STYLE R1: a file under src/<layer>/ may include
project headers only from its own layer or from layers it depends on."""
import pathlib
import re
import sys

ALLOWED = {
    "base": {"base"},
    "store": {"store", "base"},
    "runner": {"runner", "base"},
    "core": {"core", "store", "runner", "base"},
    "sched": {"sched", "core", "store", "runner", "base"},
    "api": {"api", "sched", "core", "store", "runner", "base"},
    "daemon": {"daemon", "api", "sched", "core", "store", "runner", "base"},
    "ctl": {"ctl", "base"},
    "sdk": {"sdk"},
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
root = pathlib.Path("src")
bad = []
for f in sorted(root.rglob("*.[ch]")):
    layer = f.relative_to(root).parts[0]
    for inc in INCLUDE.findall(f.read_text()):
        target = (f.parent / inc).resolve().relative_to(root.resolve()).parts
        other = target[0] if len(target) > 1 else layer
        if other not in ALLOWED.get(layer, {layer}):
            bad.append(f"{f}: includes \"{inc}\" from layer {other}, which {layer} may not use")
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
