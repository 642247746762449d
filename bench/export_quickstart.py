"""Export the quickstart run three ways and verify each against the run (the figures in docs/EXPORT.md).

    python bench/export_quickstart.py                    # runs `tuneforge quickstart` first (≈ 5 min on 2 cores)
    python bench/export_quickstart.py --run /tmp/qs/quickstart   # reuse a quickstart run folder

For each of merged (f32), gguf q8_0, ollama q8_0 (and gguf f16 with --all): `tuneforge export`, then
`tuneforge verify-export` (through the same functions), timed. Writes bench/results/export_quickstart.json
(per format: the verification record, export seconds, file size; the machine, the commit, the runtime)
and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORMATS = [("merged", None), ("gguf", "q8_0"), ("ollama", "q8_0")]


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def commit() -> str:
    run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return run.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="a quickstart run folder (default: run the quickstart first)")
    parser.add_argument("--workdir", default=None, help="where exports go (default: a temporary folder)")
    parser.add_argument("--all", action="store_true", help="also gguf f16")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "export_quickstart.json"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from tuneforge.export.verify import save_verification, verify_export
    from tuneforge.export.write import export_run

    work = Path(args.workdir or tempfile.mkdtemp(prefix="tf-export-"))
    run = Path(args.run) if args.run else None
    if run is None:
        from tuneforge.quickstart import run_quickstart

        run = run_quickstart(work).run_dir
    rows = []
    for fmt, quant in FORMATS + ([("gguf", "f16")] if args.all else []):
        out = work / f"{fmt}-{quant or 'f32'}"
        started = time.perf_counter()
        result = export_run(run, fmt, out, quant=quant)
        exported = time.perf_counter() - started
        size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        outcome = verify_export(out, run)
        save_verification(run, outcome.record)
        rows.append(
            {
                "format": fmt,
                "quant": result.quant,
                "export_seconds": round(exported, 1),
                "bytes": size,
                **outcome.record,
            }
        )
        print(f"{fmt} {quant}: passed={outcome.passed} {outcome.failures}", file=sys.stderr)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "commit": commit(),
        "run": str(run),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1, ensure_ascii=False))
    print("| export | runtime | metric: run → export | same answers | stopped | same prompts | verdict |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        metrics = "; ".join(f"{k} {m['run']:.3f} → {m['export']:.3f}" for k, m in r["metrics"].items())
        verdict = "pass" if r["passed"] else "FAIL"
        print(
            f"| {r['format']} {r['quant'] or 'f32'} | {r['runtime']} | {metrics} | {r['agreement']:.3f} | "
            f"{r['stop_rate']:.3f} | {r['prompt_parity']:.3f} | {verdict} |"
        )
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
