"""The report's "Export" section: every ``verify-export`` of this run (``RUN/exports/*.json``).

``write_report`` includes it when the run folder has verifications; ``verify-export`` rewrites just
this section of an existing report.html (between the markers below), so the rest of the page, written
at the end of training, stays as it was.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

START, END = "<!-- tuneforge:export -->", "<!-- /tuneforge:export -->"


def _fmt(value) -> str:
    return "—" if value is None else f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))


def _verifications(run_dir: Path) -> list[dict]:
    out = []
    for path in sorted((Path(run_dir) / "exports").glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, OSError):
            continue
        if isinstance(record, dict) and "metrics" in record and "format" in record:
            out.append(record)
    return out


def export_section(run_dir: Path) -> str:
    """The section's HTML between its markers (only the markers when nothing was verified)."""
    records = _verifications(run_dir)
    if not records:
        return START + END
    rows = []
    for r in records:
        metrics = "; ".join(
            f"{html.escape(name)} {_fmt(m.get('run'))} → {_fmt(m.get('export'))}" for name, m in r["metrics"].items()
        )
        verdict = "pass" if r.get("passed") else "fail: " + html.escape("; ".join(r.get("failures") or []))
        rows.append(
            f"<tr><td>{html.escape(r['format'])} {html.escape(r.get('quant') or '')}</td>"
            f'<td>{html.escape(r["runtime"])}</td><td>{metrics}</td><td class="num">{_fmt(r.get("agreement"))}</td>'
            f'<td class="num">{_fmt(r.get("stop_rate"))}</td><td class="num">{_fmt(r.get("prompt_parity"))}</td>'
            f"<td>{verdict}</td></tr>"
        )
    return (
        f"{START}<section><h2>Export</h2><p>Each exported artifact, loaded in its own runtime and asked the "
        "held-out prompts through its own template (<code>tuneforge verify-export</code>).</p>"
        '<table class="metrics"><thead><tr><th>export</th><th>runtime</th><th>run → export</th>'
        '<th class="num">same answers</th><th class="num">stopped</th><th class="num">same prompts</th>'
        f"<th>verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table></section>{END}"
    )


def update_report(run_dir: Path) -> Path | None:
    """Rewrite the export section of ``run_dir/report.html`` in place; None when there is no report."""
    path = Path(run_dir) / "report.html"
    if not path.is_file():
        return None
    page = path.read_text(encoding="utf-8")
    section = export_section(run_dir)
    if START in page and END in page:
        page = page[: page.index(START)] + section + page[page.index(END) + len(END) :]
    elif '<section class="config">' in page:  # a report written before this section existed
        at = page.index('<section class="config">')
        page = page[:at] + section + page[at:]
    else:
        page = page.replace("</main>", section + "</main>")
    path.write_text(page, encoding="utf-8")
    return path
