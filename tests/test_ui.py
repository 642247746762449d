"""`tuneforge ui`'s parts without a browser: the form from the schema, errors placed at their keys,
the data preview's loss marks, run status read from folders, the config diff, the path guard and
the key."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tuneforge.data.types import IGNORE_INDEX, PackedRow
from tuneforge.registry import config_class, method_names
from tuneforge.ui.app import config_diff, flatten
from tuneforge.ui.form import fields_of, form_spec
from tuneforge.ui.live import check, parse_yaml, place
from tuneforge.ui.paths import PathRefused, outside_roots, resolve_inside
from tuneforge.ui.preview import render_row
from tuneforge.ui.runs import Runs, _key_metric


def test_form_has_every_method_and_adapter_type_with_defaults_and_choices():
    from tuneforge.adapters.config import ADAPTER_TYPES

    spec = form_spec()
    assert set(spec["methods"]) == set(method_names())
    assert set(spec["adapters"]) == set(ADAPTER_TYPES)
    any_method = method_names()[0]
    fields = {f["key"]: f for f in spec["methods"][any_method]}
    assert (
        fields["training.learning_rate"]["default"]
        == config_class(any_method).model_fields["training"].default_factory().learning_rate
    )
    assert fields["training.scheduler"]["kind"] == "choice" and "cosine" in fields["training.scheduler"]["choices"]
    assert fields["model.name"]["description"]
    assert fields["data.train"]["required"]
    lora = {f["key"]: f for f in spec["adapters"]["lora"]}
    assert lora["adapter.r"]["kind"] == "int" and lora["adapter.r"]["default"] == 16
    assert "adapter.type" not in lora
    json.dumps(spec)  # the page receives it as JSON


def test_every_form_key_is_a_config_key():
    """A field the form writes must validate: set each to its default and load the config."""
    from tuneforge.config import validate_dict

    for name in method_names():
        raw: dict = {"method": name}
        for field in fields_of(config_class(name)):
            if field["default"] is None or field["key"].split(".")[0] in ("stages", "continual"):
                continue
            node = raw
            parts = field["key"].split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = field["default"]
        raw.setdefault("data", {}).setdefault("train", "x.jsonl")
        if "format" in {f["key"].split(".")[-1] for f in fields_of(config_class(name)) if f["required"]}:
            fmt = next(f for f in fields_of(config_class(name)) if f["key"] == "data.format")
            raw["data"]["format"] = fmt["choices"][-1]
        try:
            validate_dict(raw)
        except Exception as exc:  # only cross-field rules may object, never an unknown key
            assert "unknown key" not in str(exc), (name, exc)


def test_errors_are_placed_at_the_key_they_name():
    keys = {"training.learning_rate", "training.batch_size", "data.train", "adapter.r"}
    meant = place("training.learning_rat: unknown key (did you mean `learning_rate`?).", keys)
    assert meant["key"] == "training.learning_rate"
    assert place("training.batch_size: Input should be greater than 0 (got 0)", keys)["key"] == "training.batch_size"
    assert place("train.jsonl:12: messages[1].role: must be ...", keys)["key"] == "data.train"
    assert place("something went wrong", keys)["key"] == ""


def test_schema_check_finds_a_misspelt_key_with_did_you_mean(tmp_path):
    raw = parse_yaml(
        f"method: {method_names()[0]}\ndata: {{format: text, train: x.txt}}\ntraining: {{learning_rat: 1}}\n"
    )
    result = check(raw, [tmp_path], tmp_path, full=False)
    assert result["errors"] == [
        {
            "key": "training.learning_rate",
            "message": "training.learning_rat: unknown key (did you mean `learning_rate`?).",
        }
    ]
    with pytest.raises(ValueError, match="not valid YAML"):
        parse_yaml("method: [")


def test_files_outside_the_allowed_folders_are_refused(tmp_path):
    (tmp_path / "inside.jsonl").write_text("{}\n")
    assert resolve_inside("inside.jsonl", [tmp_path], tmp_path) == (tmp_path / "inside.jsonl").resolve()
    with pytest.raises(PathRefused):
        resolve_inside("../../etc/passwd", [tmp_path], tmp_path)
    assert outside_roots("/etc/passwd", [tmp_path], tmp_path)
    assert not outside_roots("HuggingFaceTB/SmolLM2-135M", [tmp_path], tmp_path)  # a hub id is no path
    raw = {"method": method_names()[0], "data": {"format": "text", "train": "/etc/hostname"}}
    errors = check(raw, [tmp_path], tmp_path, full=False)["errors"]
    assert errors[0]["key"] == "data.train" and "outside the folders" in errors[0]["message"]


class _Tok:
    def decode(self, ids):
        return "".join(chr(96 + i) for i in ids)


def test_preview_marks_loss_tokens_and_packed_examples():
    row = PackedRow(
        input_ids=[1, 2, 3, 4, 5, 6],
        labels=[IGNORE_INDEX, 2, 3, IGNORE_INDEX, IGNORE_INDEX, 6],
        position_ids=[0, 1, 2, 0, 1, 2],
        num_examples=2,
    )
    shown = render_row(row, _Tok())
    tokens = shown["sequences"][0]["tokens"]
    assert [t["text"] for t in tokens] == list("abcdef")
    assert [t["loss"] for t in tokens] == [False, True, True, False, False, True]
    assert [t["example"] for t in tokens] == [0, 0, 0, 1, 1, 1]
    assert shown["fields"]["num_examples"] == 2


def _fake_run(root: Path, name: str, *, summary=False, checkpoint=False, metrics=()) -> None:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        "method: m\nmodel: {name: tiny}\nadapter: {type: lora}\ntraining: {max_steps: 10}\n"
    )
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics) + '{"step": 9, "lo')
    if checkpoint:
        (run / "checkpoints" / "step-5").mkdir(parents=True)
    if summary:
        after = {"eval_loss": 1.0, "accuracy": 0.9}
        body = {
            "before": {"eval_loss": 2.0, "accuracy": 0.5},
            "after": after,
            "train": {"wall_seconds": 12.5, "steps": 10},
        }
        (run / "summary.json").write_text(json.dumps(body))


def test_run_status_and_table_come_from_the_folders(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "done", summary=True, metrics=[{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}])
    _fake_run(root, "halted", checkpoint=True, metrics=[{"step": 1, "loss": 2.0}])
    _fake_run(root, "broken")
    runs = Runs(root, tmp_path)
    assert {n: runs.status(n) for n in runs.names()} == {"done": "finished", "halted": "stopped", "broken": "failed"}
    row = runs.row("done")
    assert (row["key_metric"], row["before"], row["after"]) == ("accuracy", 0.5, 0.9)
    assert row["step"] == 2 and row["total_steps"] == 10 and row["wall_seconds"] == 12.5 and row["adapter"] == "lora"
    assert runs.detail("halted")["metrics"] == [{"step": 1, "loss": 2.0}]  # the cut last line is skipped
    assert _key_metric({"eval_loss": 2.0}, {"eval_loss": 1.0}) == "eval_loss"


def test_a_pid_that_is_not_a_tuneforge_process_is_not_a_running_run(tmp_path):
    root = tmp_path / "runs"
    _fake_run(root, "halted", checkpoint=True)
    (root / ".ui").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (root / ".ui" / "halted.pid").write_text(str(sleeper.pid))
        assert Runs(root, tmp_path).status("halted") == "stopped"
    finally:
        sleeper.kill()
        sleeper.wait()


def test_config_diff_lists_only_the_keys_that_differ():
    a = {"name": "a", "training": {"learning_rate": 0.001, "batch_size": 2}, "data": {"train": "x"}}
    b = {"name": "b", "training": {"learning_rate": 0.003, "batch_size": 2}, "data": {"train": "x"}, "seed": 1}
    assert flatten(a)["training.learning_rate"] == 0.001
    assert config_diff({"a": a, "b": b}) == [
        {"key": "seed", "values": {"a": None, "b": 1}},
        {"key": "training.learning_rate", "values": {"a": 0.001, "b": 0.003}},
    ]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, key: str | None = None) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0  # not listening yet


def test_the_command_starts_fast_needs_its_key_and_guards_files(tmp_path):
    """`tuneforge ui` with a key: the page loads, every route needs the key, and a run file outside
    the runs folder is refused even with it."""
    port = _port()
    env = {**os.environ, "TUNEFORGE_API_KEY": "s3cret", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    ui = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        while _get(f"{base}/") != 200:
            assert time.monotonic() - started < 60, "tuneforge ui did not answer within 60 s"  # liveness only
            assert ui.poll() is None, "tuneforge ui exited"
            time.sleep(0.1)
        assert _get(f"{base}/static/app.js") == 200
        assert _get(f"{base}/api/runs") == 401
        assert _get(f"{base}/api/runs", "wrong") == 401
        assert _get(f"{base}/api/runs", "s3cret") == 200
        assert _get(f"{base}/api/files?dir=/etc", "s3cret") == 403
        assert _get(f"{base}/runs/x/..%2F..%2Fsecret.txt", "s3cret") in (403, 404)
    finally:
        ui.send_signal(signal.SIGTERM)
        ui.wait(timeout=30)


def test_binding_beyond_this_machine_needs_a_key(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TUNEFORGE_API_KEY"}
    done = subprocess.run(
        [sys.executable, "-m", "tuneforge", "ui", "--host", "0.0.0.0", "--port", str(_port())],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "set a key" in done.stderr
