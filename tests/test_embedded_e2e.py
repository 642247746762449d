"""The real embedded model end to end, on a few steps (the one slower test of the suite).

Uses the shipped quickstart config through the ordinary train path, on a small
slice of the bundled task, and checks that the adapter it writes loads in plain
peft and reproduces the logits of the trained model.
"""

import pytest
import torch

from tuneforge.config import load_config
from tuneforge.models.load import count_parameters
from tuneforge.quickstart import quickstart_config_path
from tuneforge.runner import train_from_config
from tuneforge.tasks.clinical_notes import write_task_files


@pytest.mark.slow
def test_embedded_model_quickstart_config_few_steps(tmp_path):
    from peft import AutoPeftModelForCausalLM

    files = write_task_files(tmp_path / "data", n_train=12, n_eval=2)
    config = load_config(
        quickstart_config_path(),
        [
            f"data.train={files['train']}",
            f"data.eval={files['eval']}",
            f"output_dir={tmp_path / 'runs'}",
            "name=e2e",
            "training.max_steps=2",
            "training.batch_size=1",
            "eval.max_new_tokens=8",
            "eval.batch_size=2",
        ],
    )
    result = train_from_config(config, config_path=quickstart_config_path())
    train = result.summary["train"]
    # LoRA r=16 on all 7 linear layers of SmolLM2-135M (METHODS.md): 4,884,480 trainable.
    assert train["trainable_parameters"] == 4_884_480
    assert train["total_parameters"] == 134_515_008 + 4_884_480
    assert result.summary["after"]["eval_loss"] < result.summary["before"]["eval_loss"]

    plain = AutoPeftModelForCausalLM.from_pretrained(result.output_dir).eval()
    assert count_parameters(plain)[1] == train["total_parameters"]
    ids = torch.tensor([[1, 520, 2641, 314, 253, 1345, 2]])
    with torch.no_grad():
        expected = result.model.eval()(input_ids=ids).logits
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-4)
