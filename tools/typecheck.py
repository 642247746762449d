"""Run mypy on src/ and fail only on findings that are not in the committed baseline.

The baseline (tools/mypy-baseline.txt) lists today's findings without line numbers, so code moving
around does not churn it. `make test` fails on any finding beyond it; when fixes make it shrink,
`python tools/typecheck.py --update` writes the smaller baseline (commit it). The count only goes down.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "tools" / "mypy-baseline.txt"
FINDING = re.compile(r"^(?P<path>[^:]+):\d+(?::\d+)?: error: (?P<message>.*)$")


def findings() -> list[str]:
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "src/tuneforge"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if run.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        sys.exit(f"mypy failed to run:\n{run.stdout}{run.stderr}")
    out = []
    for line in run.stdout.splitlines():
        match = FINDING.match(line)
        if match:
            out.append(f"{match['path']}: {match['message']}")
    return sorted(out)


def main() -> int:
    now = findings()
    if "--update" in sys.argv:
        BASELINE.write_text("".join(f"{f}\n" for f in now), encoding="utf-8")
        print(f"mypy baseline: {len(now)} findings written to {BASELINE.relative_to(ROOT)}")
        return 0
    known = collections.Counter(BASELINE.read_text(encoding="utf-8").splitlines()) if BASELINE.exists() else {}
    new = collections.Counter(now) - collections.Counter(known)
    if new:
        print(f"mypy: {sum(new.values())} new finding(s) not in {BASELINE.relative_to(ROOT)}:")
        for finding in sorted(new.elements()):
            print(f"  {finding}")
        print("Fix them (run `python -m mypy src/tuneforge` for line numbers); the baseline only shrinks.")
        return 1
    fixed = sum((collections.Counter(known) - collections.Counter(now)).values())
    hint = f"; {fixed} fixed, run `python tools/typecheck.py --update` to shrink the baseline" if fixed else ""
    print(f"mypy: {len(now)} known findings, 0 new{hint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
