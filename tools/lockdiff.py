"""Print the packages whose resolved version differs from the lock (what `make test-latest` tries).

Usage: python tools/lockdiff.py resolved.txt requirements/lock.txt [more pin files]  (resolved: `pip freeze`)
Standard library only; environment markers in the lock are evaluated for this interpreter.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def _pins(path: str, with_markers: bool) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        match = re.match(r"([A-Za-z0-9_.\-]+)==([^ ;]+)\s*(?:;\s*(.+))?$", line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and with_markers and not _marker_holds(marker):
            continue
        pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def _marker_holds(marker: str) -> bool:
    try:
        from packaging.markers import Marker
    except ImportError:  # pragma: no cover - pip vendors packaging; keep the line when unsure
        return True
    return Marker(marker).evaluate()


def main(resolved: str, *locks: str) -> int:
    got = _pins(resolved, False)
    locked = {name: version for lock in locks for name, version in _pins(lock, True).items()}
    # a local label (torch 2.13.0+cpu) is the same release as the locked 2.13.0
    changed = [(n, locked[n], got[n]) for n in sorted(got) if n in locked and locked[n] != got[n].split("+")[0]]
    new = [n for n in sorted(got) if n not in locked]
    if not changed and not new:
        print("resolved: the same versions as the lock")
    for name, old, now in changed:
        print(f"newer than the lock: {name} {old} -> {now}")
    for name in new:
        print(f"not in the lock: {name}=={got[name]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
