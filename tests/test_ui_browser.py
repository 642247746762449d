"""`tuneforge ui` in a real browser (headless Chromium driven by Playwright), the whole path:
fill the form for the quickstart task, a bad key's error at its field, the plan, the data preview's
loss tokens, launch, the curve growing, a refresh mid-run, stop, resume, a second run launched
alongside, the UI process killed and started again mid-run, both runs finishing, compare, the report,
and the adapter answering in the playground. Each step asserts on what is on the page and writes a
screenshot (to a temporary folder; TUNEFORGE_UI_SHOTS=docs/ui refreshes the committed ones).

The browser: Debian's `chromium` package (`make ui-browser` installs it; Playwright's own browser
download is not used). Without Playwright or a browser this test skips, except under CI (CI=true),
where it fails: CI must run it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import chat_rows, write_jsonl

# A test run must not rewrite the tracked screenshots: they go to a temporary folder unless
# TUNEFORGE_UI_SHOTS names one (TUNEFORGE_UI_SHOTS=docs/ui refreshes the committed ones).
SHOTS = Path(os.environ.get("TUNEFORGE_UI_SHOTS") or tempfile.mkdtemp(prefix="tuneforge-ui-shots-"))


def chromium() -> str | None:
    for name in (os.environ.get("TUNEFORGE_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _need(what: str) -> None:
    message = f"{what} missing: run `make ui-browser` (docs/UI.md)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ui(project: Path, port: int, env: dict) -> tuple[subprocess.Popen, float]:
    """`tuneforge ui` as a user starts it; (process, seconds until the page answers)."""
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "ui", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while time.monotonic() - started < 60:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=1).close()
            return process, time.monotonic() - started
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("tuneforge ui did not answer within 60 s")


@pytest.fixture
def project(tmp_path, tiny_model_dir):
    write_jsonl(tmp_path / "data" / "train.jsonl", chat_rows(96))
    write_jsonl(tmp_path / "data" / "eval.jsonl", chat_rows(6, seed=1))
    return tmp_path


def test_the_whole_path_in_a_browser(project, tmp_path):
    try:
        from playwright.sync_api import expect, sync_playwright
    except ImportError:
        _need("the playwright package")
    browser_path = chromium()
    if browser_path is None:
        _need("a Chromium browser")
    SHOTS.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TUNEFORGE_CACHE": str(tmp_path / "cache")}
    # Every training step of the runs the page launches lasts at least 0.2 s, so the page can stop a run while it
    # is still running on any machine (a fast one finished the 100 tiny steps before the stop click).
    env["TUNEFORGE_STEP_PAUSE_S"] = "0.2"
    port = _port()
    ui, startup = start_ui(project, port, env)
    # A liveness bound, not a speed claim (no timing assertions in tests): docs/UI.md has the measured time.
    assert startup < 60, f"tuneforge ui took {startup:.1f} s to answer"
    print(f"tuneforge ui answered {startup:.2f} s after the command started")
    url = f"http://127.0.0.1:{port}/"
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(120_000)
            expect.set_options(timeout=60_000)  # a shared 2-core CI machine: checks and runs take seconds
            shot = lambda name: page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)  # noqa: E731

            # 1. the form, filled for the quickstart task, pointed at the tiny model and data
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']")
            page.click("#start-quickstart")
            expect(page.locator("#yaml")).to_have_value(re.compile("clinical"))
            expect(page.locator("[data-key='model.name']")).to_have_value("smollm2-135m-instruct")
            for key, value in {
                "name": "quick",
                "model.name": "tiny-model",
                "data.train": "data/train.jsonl",
                "data.eval": "data/eval.jsonl",
                "data.max_length": "256",
                "training.max_steps": "100",
                "training.learning_rate": "0.001",
                "training.save_every": "10",
                "adapter.r": "4",
                "eval.max_new_tokens": "8",
                "eval.scorers": '["exact_match"]',
            }.items():
                page.fill(f"[data-key='{key}']", value)
                page.dispatch_event(f"[data-key='{key}']", "change")
            expect(page.locator("#yaml")).to_have_value(re.compile("name: tiny-model"))
            expect(page.locator("#check-state")).to_have_text("valid ✓", timeout=180_000)
            shot("01-form")

            # 2. a bad key typed in the YAML: the error sits at the field it means, with did-you-mean
            good = page.input_value("#yaml")
            page.fill("#yaml", good.replace("learning_rate:", "learning_rat:"))
            page.dispatch_event("#yaml", "input")
            error = page.locator(".field[data-field='training.learning_rate'] .err")
            expect(error).to_contain_text("did you mean `learning_rate`")
            error.scroll_into_view_if_needed()
            shot("02-bad-key")
            page.fill("#yaml", good)
            page.dispatch_event("#yaml", "input")
            expect(page.locator("#check-state")).to_have_text("valid ✓")

            # 3. the plan: trainable parameters, time per step and run, memory, fits
            expect(page.locator("#plan-trainable")).to_contain_text("trainable parameters:")
            assert any(ch.isdigit() for ch in page.inner_text("#plan-trainable"))
            expect(page.locator("#plan-time")).to_contain_text("per step × 100 steps")
            expect(page.locator("#plan-fits")).to_have_text("fits")
            page.locator("#plan-panel").scroll_into_view_if_needed()
            shot("03-plan")

            # 4. the data preview: loss tokens highlighted, packed examples marked
            page.click("#preview-button")
            page.wait_for_selector("#preview .tok.loss")
            loss_text = "".join(page.locator("#preview .tok.loss").all_inner_texts())
            assert "<|im_end|>" in loss_text  # the end of turn carries the loss
            first = chat_rows(96)[0]["messages"][1]["content"]
            assert first in loss_text  # the first answer, exactly
            assert page.locator("#preview .boundary").count() > 0  # examples packed into one row
            assert "packed" in page.inner_text("#preview")
            page.locator("#preview-panel").scroll_into_view_if_needed()
            shot("04-preview")

            # 5. launch; the curve grows
            page.click("#launch-button")
            expect(page.locator("tr[data-run='quick'] [data-status]")).to_have_text("running")
            page.click("tr[data-run='quick']")
            loss_line = page.locator("#run-charts svg[data-title='loss'] polyline[data-series='loss']")
            page.wait_for_function(
                "() => +(document.querySelector(\"#run-charts svg[data-title='loss'] polyline\")"
                "?.dataset.points || 0) >= 3",
                timeout=180_000,
            )
            seen = int(loss_line.get_attribute("data-points"))
            page.wait_for_function(
                f"() => +document.querySelector(\"#run-charts svg[data-title='loss'] polyline\").dataset.points > {seen}"
            )
            shot("05-running")

            # 6. stop: SIGINT, the run writes a checkpoint and is 'stopped'
            page.click("tr[data-run='quick'] button[data-action='stop']")
            expect(page.locator("tr[data-run='quick'] [data-status]")).to_have_text("stopped")
            assert list((project / "runs" / "quick" / "checkpoints").iterdir())
            page.click("tr[data-run='quick']")
            shot("06-stopped")

            # 7. a second run launched from the form, and the first resumed alongside it
            page.click("nav button[data-tab='new']")
            page.fill("[data-key='name']", "quick-b")
            page.dispatch_event("[data-key='name']", "change")
            page.fill("[data-key='training.learning_rate']", "0.003")
            page.dispatch_event("[data-key='training.learning_rate']", "change")
            page.fill("[data-key='training.max_steps']", "20")
            page.dispatch_event("[data-key='training.max_steps']", "change")
            expect(page.locator("#yaml")).to_have_value(re.compile("max_steps: 20"))
            page.click("#launch-button")
            expect(page.locator("tr[data-run='quick-b'] [data-status]")).to_have_text("running")
            page.click("tr[data-run='quick'] button[data-action='resume']")
            expect(page.locator("tr[data-run='quick'] [data-status]")).to_have_text("running")

            # 8. the UI process killed mid-run and started again, the page refreshed mid-run: no run lost
            ui.send_signal(signal.SIGKILL)
            ui.wait()
            ui, _ = start_ui(project, port, env)
            page.reload()
            page.wait_for_selector("body[data-ready='1']")
            page.click("nav button[data-tab='runs']")
            for name in ("quick", "quick-b"):  # still there, still running (unless already done)
                expect(page.locator(f"tr[data-run='{name}'] [data-status]")).to_have_text(
                    re.compile("running|finished")
                )
            for name in ("quick", "quick-b"):
                expect(page.locator(f"tr[data-run='{name}'] [data-status]")).to_have_text("finished", timeout=400_000)
            row = page.inner_text("tr[data-run='quick']")
            assert "exact_match" in row and "→" in row
            page.click("tr[data-run='quick']")
            shot("07-finished")
            assert json.loads((project / "runs" / "quick" / "summary.json").read_text())["train"]["steps"] == 100

            # 9. compare the two runs: overlaid curves, before / after, config diff
            page.check("input[data-run='quick']")
            page.check("input[data-run='quick-b']")
            page.click("#compare-button")
            page.wait_for_selector("#compare-diff")
            assert page.locator("#compare svg[data-title='loss'] polyline").count() == 2
            diff = page.inner_text("#compare-diff")
            assert "training.learning_rate" in diff and "training.max_steps" in diff
            assert "exact_match" in page.inner_text("#compare-metrics")
            shot("08-compare")

            # 10. the run's report.html opens from the table
            page.click("nav button[data-tab='runs']")
            with page.context.expect_page() as opened:
                page.click("tr[data-run='quick'] a.report-link")
            report = opened.value
            report.wait_for_load_state()
            assert "quick" in report.content()
            report.close()

            # 11. the playground: the base and the adapter answer one prompt, streamed
            page.click("nav button[data-tab='play']")
            page.check("input[data-play='quick']")
            page.click("#play-load")
            expect(page.locator("#play-state")).to_contain_text("ready", timeout=180_000)
            page.fill("#play-prompt", "reverse apple3")
            page.click("#play-send")
            for model in ("quick", page.input_value("#play-base")):
                answer = page.locator(f".answer[data-model='{model}']")
                expect(answer).to_have_attribute("data-done", "1")
                assert int(answer.get_attribute("data-chars")) > 0  # streamed text (a 100-step tiny model's)
            shot("09-playground")
            browser.close()
    finally:
        for log in sorted((project / "runs" / ".ui").glob("*.log")):  # shown when the test fails
            print(f"== {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
        ui.send_signal(signal.SIGTERM)
        try:
            ui.wait(timeout=30)
        except subprocess.TimeoutExpired:
            ui.kill()
