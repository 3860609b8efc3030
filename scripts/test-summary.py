#!/usr/bin/env python3
"""Sum the final "N passed, N failed" line of every test run recorded in the given meson build
directories (meson-logs/testlog.json) and print one total line in the same form. A test whose
output lacks the line counts as one failure, so a crashed binary cannot hide."""
import json
import re
import sys

LINE = re.compile(r"^(\d+) passed, (\d+) failed\s*$", re.M)
passed = failed = 0
for build in sys.argv[1:]:
    with open(f"{build}/meson-logs/testlog.json") as f:
        for line in f:
            t = json.loads(line)
            found = LINE.findall(t.get("stdout") or "")
            if found:
                p, fl = map(int, found[-1])
                passed += p
                failed += fl
            if not found or t["result"] not in ("OK", "SKIP", "EXPECTEDFAIL"):
                if not found or int(found[-1][1]) == 0:
                    failed += 1
                print(f"{build}: {t['name']}: {t['result']}", file=sys.stderr)
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
