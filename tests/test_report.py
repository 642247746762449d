"""The HTML run report and the CLI before/after table."""

from __future__ import annotations

import base64
import re

from rich.console import Console

from tuneforge.eval.generation import GenerationResult, SampleResult
from tuneforge.eval.report import lower_is_better, print_before_after, report_samples, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SUMMARY = {
    "before": {"eval_loss": 2.5, "exact_match": 0.25},
    "after": {"eval_loss": 2.0, "exact_match": 0.125},
    "train": {
        "tokens_per_second": 96.4,
        "tokens": 122880,
        "trainable_parameters": 4_884_480,
        "total_parameters": 139_399_488,
        "peak_memory_mb": 2310.5,
        "wall_seconds": 1274.6,
        "optimizer": "adamw",
    },
    "run": {"name": "demo-run", "method": "sft", "model": "smollm2-135m-instruct", "adapter": "lora"},
}
METRICS = [
    {"step": s, "loss": 3.0 - 0.1 * s, "lr": 1e-4, "tokens_per_second": 95.0, "tokens": 100 * s, "epoch": s / 10}
    for s in range(1, 11)
] + [{"step": 5, "eval_loss": 2.4, "eval_perplexity": 11.0}, {"step": 10, "eval_loss": 2.0, "eval_perplexity": 7.4}]
SAMPLES = [
    {
        "prompt": "Say hi <b>bold</b>",
        "reference": "hi",
        "before": "<script>alert('pwned')</script>",
        "after": "hi & bye",
        "scores": {"before": {"exact_match": 0.0}, "after": {"exact_match": 0.0}},
    }
]


def _rows(html: str) -> dict[str, list[str]]:
    """metric name -> [before, after, change] cell texts of the results table."""
    rows = {}
    for name, cells in re.findall(r'<tr><th scope="row">([^<]+) <span class="hint">.*?</span></th>(.*?)</tr>', html):
        rows[name.strip()] = [re.sub(r"<.*?>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", cells)]
    return rows


def test_report_values_plots_and_facts(tmp_path):
    path = write_report(tmp_path, summary=SUMMARY, metrics=METRICS, samples=SAMPLES, config_text="method: sft\n")
    assert path == tmp_path / "report.html"
    html = path.read_text()
    rows = _rows(html)
    assert rows["eval_loss"] == ["2.5", "2", "−0.5 (−20.0%)"]
    assert rows["exact_match"] == ["0.25", "0.125", "−0.125"]
    # loss went down (better, green); exact_match went down (worse, red)
    assert re.search(r'class="num delta better">−0.5', html)
    assert re.search(r'class="num delta worse">−0.125', html)
    # facts: trainable share, memory, wall time, extra keys
    assert "4.88M of 139M (3.50%)" in html
    assert "2.26 GB" in html and "21m 15s" in html and "96.4 tokens/s" in html and "adamw" in html
    assert "demo-run" in html and "smollm2-135m-instruct" in html
    # plots: saved as files and embedded as the same bytes
    for name in ("loss.png", "lr.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in html
    assert "<details><summary><b>resolved config</b></summary><pre>method: sft\n</pre>" in html


def test_report_is_self_contained(tmp_path):
    html = write_report(tmp_path, summary=SUMMARY, metrics=METRICS, samples=SAMPLES, config_text="").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html


def test_sample_text_is_escaped(tmp_path):
    html = write_report(tmp_path, summary=SUMMARY, metrics=METRICS, samples=SAMPLES, config_text="a: <x>").read_text()
    assert "<script>" not in html
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert "Say hi &lt;b&gt;bold&lt;/b&gt;" in html and "hi &amp; bye" in html
    assert "a: &lt;x&gt;" in html


def test_long_prompt_is_collapsible(tmp_path):
    long_prompt = "\n".join(f"few-shot example {i}" for i in range(40)) + "\nQuestion: the real one?"
    samples = [dict(SAMPLES[0], prompt=long_prompt)]
    html = write_report(tmp_path, summary=SUMMARY, metrics=METRICS, samples=samples, config_text="").read_text()
    details = html.split('<div class="prompt"><details>')[1]
    assert f"<pre>{long_prompt}</pre></details>" in details  # whole prompt inside <details>
    tail = details.split('<pre class="tail">')[1].split("</pre>")[0]
    assert tail.endswith("Question: the real one?") and "example 0\n" not in tail


def test_graceful_with_nothing(tmp_path):
    html = write_report(tmp_path, summary={}, metrics=[], samples=[], config_text="").read_text()
    assert "No evaluation was run" in html
    assert "No training metrics were recorded" in html
    assert "No sample generations" in html
    assert not (tmp_path / "plots").exists()


def test_graceful_with_one_row_and_after_only(tmp_path):
    summary = {"after": {"eval_loss": 1.9}, "run": {"name": "x"}}
    samples = [{"prompt": "p", "reference": "r", "after": "a", "scores": {"after": {"exact_match": 0.0}}}]
    html = write_report(
        tmp_path, summary=summary, metrics=[{"step": 1, "loss": 2.1, "lr": 1e-4}], samples=samples, config_text=""
    ).read_text()
    assert _rows(html)["eval_loss"] == ["—", "1.9", ""]
    assert (tmp_path / "plots" / "loss.png").read_bytes().startswith(PNG_MAGIC)
    assert "<b>before</b>" not in html  # no empty "before" column for samples
    assert "<b>after</b>" in html


def test_json_field_errors_table(tmp_path):
    summary = dict(SUMMARY, field_errors={"after": {"date": {"wrong": 3, "total": 8}}, "before": {}})
    html = write_report(tmp_path, summary=summary, metrics=[], samples=[], config_text="").read_text()
    assert "JSON fields most often wrong" in html
    assert re.search(r"<code>date</code></th><td[^>]*>—</td><td[^>]*>3 / 8</td>", html)


def test_lower_is_better():
    assert lower_is_better("eval_loss") and lower_is_better("perplexity")
    assert not lower_is_better("exact_match")


def test_report_samples_pairs_before_and_after():
    def result(preds):
        return GenerationResult(
            scores={},
            samples=[
                SampleResult(prompt=f"p{i}", reference="r", prediction=p, scores={"em": 0.0})
                for i, p in enumerate(preds)
            ],
        )

    rows = report_samples(result(["b0", "b1", "b2"]), result(["a0", "a1", "a2"]), limit=2)
    assert [(r["prompt"], r["before"], r["after"]) for r in rows] == [("p0", "b0", "a0"), ("p1", "b1", "a1")]
    assert report_samples(None, result(["a0"]), limit=5)[0]["before"] is None


def test_print_before_after():
    console = Console(record=True, width=100, color_system=None)
    print_before_after(console, SUMMARY)
    text = console.export_text()
    assert re.search(r"eval_loss\s+│\s+2.5\s+│\s+2\s+│\s+−0.5 \(−20.0%\)", text)
    assert re.search(r"exact_match\s+│\s+0.25\s+│\s+0.125\s+│\s+−0.125", text)
    empty = Console(record=True)
    print_before_after(empty, {"before": {}, "after": {}})
    assert empty.export_text() == ""
