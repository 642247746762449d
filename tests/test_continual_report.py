"""The HTML report of a continual run (issue #10)."""

from __future__ import annotations

import base64
import json
import re

from tuneforge.eval.continual_report import write_continual_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAGES = ["q1", "q2", "q3"]


def _sequential(**over) -> dict:
    summary = {
        "kind": "continual",
        "name": "evo-replay",
        "method": "sft",
        "strategy": "replay",
        "strategy_settings": {"replay_fraction": 0.25, "buffer": {"per_task": 200}},
        "stages": STAGES,
        "metric": "exact_match",
        "matrix": {
            "rows": ["base", *STAGES],
            "columns": STAGES,
            "values": [[0.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.4, 0.95, 0.0], [0.2, 0.3, 1.0]],
        },
        "general_perplexity": {"rows": ["base", *STAGES], "values": [12.3, 13.0, 14.2, 15.1]},
        "continual_metrics": {
            "acc": 0.5,
            "bwt": -0.42,
            "fwt": 0.0,
            "forgetting": {"q1": 0.7, "q2": 0.65},
            "mean_forgetting": 0.675,
        },
        "stage_results": [
            {
                "stage": s,
                "steps": 40,
                "wall_seconds": 95.2,
                "final_loss": 0.12,
                "tokens": 12345 * k,
                "output": f"stages/{k}-{s}/output",
            }
            for k, s in enumerate(STAGES, 1)
        ],
        "wise_ft": {
            "stage": "q3",
            "alphas": [0, 0.25, 0.5, 0.75, 1.0],
            "new": [0.0, 0.5, 0.8, 0.9, 1.0],
            "old": [0.6, 0.55, 0.4, 0.3, 0.25],
        },
        "extra_rows": {"merged (ties)": [0.5, 0.6, 0.7]},
        "wall_seconds": 600.0,
        "precision": {"mixed_precision": "bf16", "label": "bf16 mixed", "reason": ""},
        "created": "2026-11-27T21:00:00",
    }
    summary.update(over)
    return summary


def _write_metrics(run_dir, stages, bad_line=False):
    for k, stage in enumerate(stages, 1):
        folder = run_dir / "stages" / f"{k}-{stage}"
        folder.mkdir(parents=True)
        lines = [json.dumps({"step": s, "loss": 2.0 / s, "lr": 1e-4}) for s in range(1, 41)]
        if bad_line:
            lines.insert(3, "{not json")
        (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", "", html)


def test_sequential_report_sections_numbers_and_plots(tmp_path):
    _write_metrics(tmp_path, STAGES, bad_line=True)
    path = write_continual_report(tmp_path, summary=_sequential(), config_text="name: evo-replay\n<b>x</b>\n")
    assert path == tmp_path / "report.html"
    html = path.read_text()
    text = _text(html)
    titles = ["Headline", "Accuracy matrix R", "General-text perplexity", "WiSE-FT sweep", "Stages", "resolved config"]
    positions = [html.index(f"{t}</") for t in titles]
    assert positions == sorted(positions), "sections out of order"
    # header
    for chip in ("evo-replay", "sft", "replay", "10m 00s", "bf16 mixed"):
        assert chip in text
    # headline numbers and readings
    assert "−0.42" in text and "0.675" in text and "0.5" in text
    assert "earlier tasks score 0.42 lower on average than right after they were learned" in text
    assert "q1 0.7, q2 0.65" in text
    assert "replay_fraction" in text and "{&quot;per_task&quot;: 200}" in html
    # perplexity change from base, stage table, WiSE-FT table
    assert "+2.8 (+22.8%)" in text and "+0.7 (+5.7%)" in text
    assert "12,345" in text and "37,035" in text and "1m 35s" in text and "stages/2-q2/output" in text
    assert "0.55" in text and "of stage q3" in text
    assert "extra evaluations" in text
    # every plot is embedded and written under plots/
    names = {p.name for p in (tmp_path / "plots").iterdir()}
    assert names == {"matrix.png", "tasks.png", "wise_ft.png", "loss.png"}
    images = _images(html)
    assert len(images) == 4 and all(i.startswith(PNG_MAGIC) for i in images)
    assert sorted(images) == sorted((tmp_path / "plots" / n).read_bytes() for n in names)
    # the config is escaped and collapsible
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html and "<details>" in html


def test_joint_report_without_optional_parts(tmp_path):
    summary = _sequential(
        strategy="joint",
        strategy_settings=None,
        general_perplexity=None,
        wise_ft=None,
        extra_rows=None,
        matrix={"rows": ["base", "joint"], "columns": STAGES, "values": [[0.0, 0.1, 0.0], [0.8, 0.85, 0.9]]},
        continual_metrics={"acc": 0.85, "bwt": None, "fwt": None, "forgetting": {}, "mean_forgetting": None},
        stage_results=[
            {"stage": "joint", "steps": 120, "wall_seconds": 300.0, "final_loss": None, "tokens": None, "output": None}
        ],
    )
    html = write_continual_report(tmp_path, summary=summary, config_text="").read_text()
    text = _text(html)
    assert "0.85" in text
    bwt_row = re.search(r"<th scope=\"row\">BWT</th><td[^>]*>(.*?)</td><td[^>]*>(.*?)</td>", html)
    assert bwt_row.group(1) == "—" and "joint training" in bwt_row.group(2)
    assert "General-text perplexity" not in html and "WiSE-FT" not in html
    assert "No stage training metrics were found" in text
    assert "(not recorded)" in text
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"matrix.png", "tasks.png"}
    assert all(i.startswith(PNG_MAGIC) for i in _images(html))


def test_metrics_worked_out_from_the_matrix_and_missing_stage_logs(tmp_path):
    # no continual_metrics: ACC / BWT come from R; only stage 2 has a loss log
    summary = _sequential(continual_metrics=None, wise_ft=None)
    _write_metrics(tmp_path / "other", ["q1"])  # wrong folder: ignored
    folder = tmp_path / "stages" / "2-q2"
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 1.5}) + "\n")
    html = write_continual_report(tmp_path, summary=summary, config_text="x").read_text()
    text = _text(html)
    # ACC = mean(0.2, 0.3, 1.0) = 0.5; BWT = ((0.2-0.9) + (0.3-0.95)) / 2 = -0.675
    assert "−0.675" in text and "the mean exact_match over all 3 tasks is 0.5" in text
    assert (tmp_path / "plots" / "loss.png").read_bytes().startswith(PNG_MAGIC)


def test_empty_and_hostile_summaries_do_not_crash(tmp_path):
    html = write_continual_report(tmp_path / "a", summary={}, config_text=None).read_text()
    assert "No accuracy matrix was recorded" in html and "No stage results were recorded" in html
    odd = _sequential(
        name="<script>alert(1)</script>",
        stages=["<i>s</i>"],
        matrix={"rows": ["base", "s"], "columns": ["<i>s</i>"], "values": [[None], [float("nan")]]},
        general_perplexity={"rows": ["base"], "values": []},
        extra_rows={"m": [None]},
        wise_ft={"stage": "s", "alphas": [0, 1], "new": [0.1], "old": None},
    )
    html = write_continual_report(tmp_path / "b", summary=odd, config_text="").read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html and "<i>s</i>" not in html


# A loss as the score of R (continual.metric: eval_loss): task q1's loss rises after later stages.
LOSS_R = [[2.0, 3.0, 4.0], [0.5, 2.5, 3.8], [1.0, 0.4, 3.0], [1.5, 0.6, 0.2]]


def _headline_row(html: str, label: str) -> tuple[str, str, str]:
    """(css class, value, reading) of one headline row."""
    row = re.search(rf'<th scope="row">{label}</th><td class="num delta ([a-z]*)">(.*?)</td><td[^>]*>(.*?)</td>', html)
    return row.group(1), row.group(2), row.group(3)


def test_a_loss_metric_is_read_lower_is_better(tmp_path):
    """Issue #20: with eval_loss, a rising loss is forgetting: BWT negative, forgetting positive, both 'worse'."""
    summary = _sequential(
        metric="eval_loss",
        continual_metrics=None,
        wise_ft=None,
        matrix={"rows": ["base", *STAGES], "columns": STAGES, "values": LOSS_R},
    )
    html = write_continual_report(tmp_path, summary=summary, config_text="x").read_text()
    # worked out from R: BWT = −((1.5 − 0.5) + (0.6 − 0.4)) / 2 = −0.6,
    # FWT = −((2.5 − 3) + (3 − 4)) / 2 = +0.75,
    # forgetting q1 = 1.5 − min(0.5, 1.0) = 1.0, q2 = 0.6 − 0.4 = 0.2, mean 0.6
    assert _headline_row(html, "BWT") == (
        "worse",
        "−0.6",
        "after the last stage, earlier tasks have a 0.6 higher eval_loss (worse) on average than "
        "right after they were learned",
    )
    assert _headline_row(html, "FWT") == (
        "better",
        "+0.75",
        "before being trained on, tasks have a 0.75 lower eval_loss (better) on average than the "
        "base model did (transfer from earlier stages)",
    )
    assert _headline_row(html, "mean forgetting") == (
        "worse",
        "0.6",
        "earlier tasks end 0.6 above their best (lowest) eval_loss after being learned (q1 1, q2 0.2)",
    )
    assert "after stage i (row); lower is better." in html


def test_a_score_metric_keeps_its_wording(tmp_path):
    summary = _sequential(continual_metrics=None, wise_ft=None)  # exact_match; BWT −0.675, FWT +0.05
    html = write_continual_report(tmp_path, summary=summary, config_text="x").read_text()
    assert _headline_row(html, "BWT") == (
        "worse",
        "−0.675",
        "after the last stage, earlier tasks score 0.675 lower on average than right after they were learned",
    )
    assert _headline_row(html, "FWT")[:2] == ("better", "+0.05")
    assert _headline_row(html, "mean forgetting")[2].startswith("earlier tasks end 0.675 below their best score")
    assert "after stage i (row); higher is better." in html
