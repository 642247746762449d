"""Shipped accelerate configs parse, fit the shipped tuneforge configs on GPUs, and bad combinations are refused."""

from pathlib import Path

import pytest

from tuneforge.config import load_config
from tuneforge.distributed import check_launch, read_accelerate_config

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = sorted((ROOT / "configs" / "accelerate").glob("*.yaml"))


@pytest.fixture
def config():
    return load_config(ROOT / "configs" / "quickstart.yaml")


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_shipped_launch_configs_fit_on_gpus(path, config):
    setup = read_accelerate_config(path)
    assert check_launch(setup, config, cuda_available=True, deepspeed_available=True) == []


def test_gpu_setups_refused_on_cpu_with_reason(config):
    problems = check_launch(
        read_accelerate_config(ROOT / "configs/accelerate/fsdp.yaml"),
        config,
        cuda_available=False,
        deepspeed_available=True,
    )
    assert any("FSDP needs CUDA" in p and "--num-processes" in p for p in problems)


def test_quantized_base_with_zero3_is_refused(config):
    quantized = config.model_copy(update={"model": config.model.model_copy(update={"quantize": "4bit"})})
    zero3 = read_accelerate_config(ROOT / "configs/accelerate/deepspeed_zero3.yaml")
    (problem,) = check_launch(zero3, quantized, cuda_available=True, deepspeed_available=True)
    assert "ZeRO-3" in problem and "partition" in problem
    zero2 = read_accelerate_config(ROOT / "configs/accelerate/deepspeed_zero2.yaml")
    assert check_launch(zero2, quantized, cuda_available=True, deepspeed_available=True) == []


def test_deepspeed_accumulation_must_match(tmp_path, config):
    text = (
        (ROOT / "configs/accelerate/deepspeed_zero2.yaml")
        .read_text()
        .replace("gradient_accumulation_steps: 1", "gradient_accumulation_steps: 4")
    )
    path = tmp_path / "ds.yaml"
    path.write_text(text)
    (problem,) = check_launch(read_accelerate_config(path), config, cuda_available=True, deepspeed_available=True)
    assert "must be equal" in problem


def test_sharded_fsdp_state_dict_is_refused(tmp_path, config):
    path = tmp_path / "fsdp.yaml"
    path.write_text(
        (ROOT / "configs/accelerate/fsdp.yaml").read_text().replace("FULL_STATE_DICT", "SHARDED_STATE_DICT")
    )
    (problem,) = check_launch(read_accelerate_config(path), config, cuda_available=True)
    assert "FULL_STATE_DICT" in problem


def test_unknown_accelerate_key_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\nnot_a_key: 1\n")
    with pytest.raises(ValueError, match="not_a_key"):
        read_accelerate_config(path)
