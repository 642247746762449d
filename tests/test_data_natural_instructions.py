"""Natural Instructions v1 / v2: schema detection, prompt encoding, splits."""

import json
import shutil
from pathlib import Path

import pytest
from tiny import tiny_tokenizer

from tuneforge.config.schema import DataConfig, NaturalInstructionsOptions
from tuneforge.data import IGNORE_INDEX, DataError, load_splits, read_records
from tuneforge.data.formats import natural_instructions as ni

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "natural_instructions"
V2 = EXAMPLES / "task_sentiment_v2.json"
V1 = EXAMPLES / "task_v1_example.json"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def task(path: Path) -> ni.Task:
    problems: list[str] = []
    parsed = ni.parse_task(next(iter(read_records(str(path)))), problems)
    assert problems == []
    return parsed


def load(tok, train, **options):
    fields = {k: options.pop(k) for k in ("eval", "eval_fraction", "template", "seed") if k in options}
    cfg = DataConfig(
        format="natural_instructions",
        train=train,
        max_length=2048,
        natural_instructions=NaturalInstructionsOptions(**options),
        **fields,
    )
    return load_splits(cfg, tok, use_cache=False)


def test_example_files_are_detected_as_v1_and_v2():
    v2, v1 = task(V2), task(V1)
    assert (v2.schema, len(v2.instances), len(v2.positives), len(v2.negatives)) == ("v2", 40, 3, 2)
    assert (v1.schema, len(v1.instances), len(v1.positives), len(v1.negatives)) == ("v1", 20, 2, 2)
    assert v1.avoid.startswith("Do not write units") and v1.negatives[0].suggestion == "Subtract: 9 - 4 = 5."
    assert v2.name == "task_sentiment_v2"


def test_v2_prompt_has_definition_and_the_requested_examples(tok):
    v2 = task(V2)
    text = ni.instruction_text(v2, ni.PromptOptions(num_positive=2, num_negative=1, include_explanations=False))
    assert text.startswith("Definition: In this task, you are given a short product review.")
    assert "Positive example 1:" in text and "Positive example 2:" in text and "Positive example 3:" not in text
    assert v2.positives[1].input in text and v2.positives[2].input not in text
    assert "Negative example 1 (a wrong answer, do not answer like this):" in text
    assert v2.negatives[0].input in text and v2.negatives[1].input not in text
    assert "Explanation:" not in text
    with_expl = ni.instruction_text(v2, ni.PromptOptions(num_positive=2, num_negative=1, include_explanations=True))
    assert with_expl.count("Explanation:") == 3 and v2.positives[0].explanation in with_expl
    bare = ni.instruction_text(v2, ni.PromptOptions(num_positive=0, num_negative=0))
    assert "example" not in bare.lower()


def test_v1_prompt_has_avoid_emphasis_and_suggestions_when_asked(tok):
    v1 = task(V1)
    full = ni.instruction_text(v1, ni.PromptOptions(num_positive=1, num_negative=2, include_explanations=True))
    assert "Things to avoid: Do not write units" in full and "Emphasis and caution:" in full
    assert "Prompt: Answer the word problem with a number." in full
    assert full.count("Explanation:") == 3 and full.count("Suggestion:") == 2
    plain = ni.instruction_text(v1, ni.PromptOptions(num_positive=1, include_avoid_and_emphasis=False))
    assert "Things to avoid" not in plain and "Emphasis" not in plain and "Negative example" not in plain


def test_instances_render_through_the_chat_path_with_first_output_as_answer(tok):
    splits = load(tok, str(V2), eval=str(V2), num_positive=2)
    v2 = task(V2)
    example, sample = splits.train[0], splits.eval_samples[0]
    rendered = tok.decode(example.input_ids)
    assert rendered.startswith(
        "<|im_start|>system\nYou are a tiny test model.<|im_end|>\n<|im_start|>user\nDefinition:"
    )
    assert f"Input: {v2.instances[0].input}\nOutput:<|im_end|>" in rendered
    answer = tok.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])
    assert answer == v2.instances[0].outputs[0] + "<|im_end|>"
    assert (sample.prompt, sample.reference) == (v2.instances[0].input, v2.instances[0].outputs[0])
    assert example.input_ids[: len(sample.prompt_ids)] == sample.prompt_ids
    assert splits.train[0].where == f"{V2}:1:Instances[0]"


def test_plain_rendering_and_all_outputs_kept_as_references(tok, tmp_path):
    data = json.loads(V2.read_text())
    data["Instances"] = [{"input": "Great!", "output": ["positive", "pos"]}, {"input": "Bad.", "output": ["negative"]}]
    path = tmp_path / "task_multi.json"
    path.write_text(json.dumps(data))
    splits = load(tok, str(path), eval=str(path), template="plain", num_positive=1)
    assert tok.decode(splits.train[0].input_ids).endswith("Input: Great!\nOutput: positive<|im_end|>")
    assert splits.eval_samples[0].references == ["positive", "pos"]
    assert splits.eval_samples[0].reference == "positive"


def test_split_by_instance_holds_out_a_share_of_every_task(tok, tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    shutil.copy(V2, folder)
    shutil.copy(V1, folder)
    splits = load(tok, str(folder), eval_fraction=0.25, split_by="instance")
    assert len(splits.train) == 30 + 15 and len(splits.eval) == 10 + 5
    held = {s.where for s in splits.eval_samples}
    assert {w.split(":")[0] for w in held} == {str(folder / V1.name), str(folder / V2.name)}
    assert held.isdisjoint({e.where for e in splits.train})
    again = load(tok, str(folder), eval_fraction=0.25, split_by="instance")
    assert [s.where for s in again.eval_samples] == [s.where for s in splits.eval_samples]  # deterministic
    other = load(tok, str(folder), eval_fraction=0.25, split_by="instance", seed=1)
    assert [s.where for s in other.eval_samples] != [s.where for s in splits.eval_samples]


def test_split_by_task_holds_out_whole_tasks(tok, tmp_path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    for i in range(4):
        data = json.loads(V2.read_text())
        data["Instances"] = data["Instances"][:5]
        (folder / f"task{i}.json").write_text(json.dumps(data))
    splits = load(tok, str(folder), eval_fraction=0.25, split_by="task")
    train_tasks = {e.where.split(":")[0] for e in splits.train}
    eval_tasks = {e.where.split(":")[0] for e in splits.eval}
    assert len(train_tasks) == 3 and len(eval_tasks) == 1 and train_tasks.isdisjoint(eval_tasks)
    assert len(splits.eval) == 5 and len(splits.eval_samples) == 5


def test_split_by_task_needs_several_tasks(tok):
    with pytest.raises(DataError, match="split_by: 'task' holds out whole tasks"):
        load(tok, str(V2), eval_fraction=0.2, split_by="task")


def test_max_instances_per_task_caps_each_task(tok):
    splits = load(tok, [str(V1), str(V2)], max_instances_per_task=7)
    assert len(splits.train) == 14
    assert splits.report.rows == 14


def test_bad_task_files_are_reported(tok, tmp_path):
    bad = tmp_path / "task_bad.json"
    bad.write_text(
        json.dumps(
            {
                "Definition": ["Do it."],
                "Positive Examples": [{"input": "a", "output": "b", "explanation": "c"}],
                "Instances": [{"input": "x", "output": ["y"]}, {"input": "x2", "output": []}, {"output": ["z"]}],
            }
        )
    )
    not_task = tmp_path / "notes.json"
    not_task.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(DataError) as err:
        load(tok, [str(bad), str(not_task)])
    assert err.value.problems[0] == (
        f"{bad}:1: Instances[1].output: must be a non-empty string or a non-empty list of non-empty strings"
    )
    assert err.value.problems[1] == f"{bad}:1: Instances[2].input: missing or not a string"
    assert err.value.problems[2].startswith(f"{not_task}:1: Instances: missing; not a Natural Instructions task")
