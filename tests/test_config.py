"""Config schema, friendly errors, overrides, and every shipped config."""

from pathlib import Path

import pytest

from tuneforge.config import ConfigError, dump_config, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
BASE = {"method": "sft", "data": {"format": "chat", "train": "x.jsonl"}}


def problems_of(raw):
    with pytest.raises(ConfigError) as info:
        load_config(data=raw)
    return info.value.problems


def test_unknown_key_suggests_nearest_at_every_depth():
    assert problems_of({**BASE, "training": {"learnig_rate": 1e-3}}) == [
        "training.learnig_rate: unknown key (did you mean `learning_rate`?)."
    ]
    deep = problems_of({**BASE, "data": {**BASE["data"], "natural_instructions": {"num_postive": 3}}})
    assert deep == ["data.natural_instructions.num_postive: unknown key (did you mean `num_positive`?)."]
    top = problems_of({**BASE, "trainig": {}})
    assert "did you mean `training`" in top[0]


def test_unknown_key_without_close_match_lists_valid_keys():
    (problem,) = problems_of({**BASE, "model": {"zzz": 1}})
    assert "Valid keys here:" in problem and "trust_remote_code" in problem


def test_method_discriminator_and_compatibility():
    assert "did you mean `sft`" in problems_of({"method": "sfft"})[0]
    assert "missing key 'method'" in problems_of({"data": {}})[0]
    (problem,) = problems_of({"method": "cpt", "data": {"format": "chat", "train": "x"}})
    assert "data.format" in problem and "'text'" in problem
    (problem,) = problems_of({"method": "sft", "data": {"format": "text", "train": "x"}})
    assert "method 'cpt'" in problem


def test_value_errors_name_the_key():
    (problem,) = problems_of({**BASE, "training": {"batch_size": 0}})
    assert problem.startswith("training.batch_size:")
    (problem,) = problems_of({**BASE, "training": {"scheduler": "cosin"}})
    assert problem.startswith("training.scheduler:")


def test_overrides_parse_yaml_values_and_merge():
    assert parse_overrides(
        ["training.learning_rate=1e-4", "adapter.target_modules=[q_proj, v_proj]", "adapter=null"][:2]
    ) == {"training": {"learning_rate": 1e-4}, "adapter": {"target_modules": ["q_proj", "v_proj"]}}
    config = load_config(data=dict(BASE), overrides=["training.learning_rate=1e-4", "adapter.r=8", "name=abc"])
    assert config.training.learning_rate == 1e-4 and config.adapter.r == 8 and config.name == "abc"
    with pytest.raises(ConfigError, match="key.subkey=value"):
        parse_overrides(["nonsense"])


def test_yaml_file_errors(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="file not found"):
        load_config(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: sft\ndata: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert str(bad) in str(info.value)


def test_scientific_notation_in_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: sft\ndata: {format: chat, train: x.jsonl}\ntraining: {learning_rate: 2e-4}\n")
    assert load_config(path).training.learning_rate == 2e-4


def test_dump_is_complete_and_reloads(tmp_path):
    config = load_config(data=dict(BASE))
    text = dump_config(config)
    assert "learning_rate" in text and "trust_remote_code: false" in text
    path = tmp_path / "resolved.yaml"
    path.write_text(text)
    assert load_config(path) == config


def test_trust_remote_code_off_by_default():
    assert load_config(data=dict(BASE)).model.trust_remote_code is False


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_passes_schema(path):
    config = load_config(path)
    from tuneforge.methods import method_names

    assert config.method in method_names()
