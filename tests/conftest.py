import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TUNEFORGE_NO_PROGRESS", "1")
# mixed_precision: auto picks bf16 on CPUs with fast bf16 (training/precision.py); pin fp32 so the suite runs the
# same on every CPU (tests of the bf16 choice clear this themselves).
os.environ.setdefault("TUNEFORGE_CPU_BF16", "0")


@pytest.fixture(autouse=True)
def quiet_library_noise():
    """quiet.py's warning filters, as every tuneforge process has them from import on.
    pytest captures warnings inside its own catch_warnings blocks (collection, each test),
    so filters installed when a test module first imports tuneforge do not last."""
    from tuneforge.quiet import silence_library_noise

    silence_library_noise()


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Tokenisation caches and conversions go to a temporary folder."""
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A saved tiny Llama + byte-level ChatML tokenizer: a model folder `model.name` can point at."""
    from tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer()
    model = tiny_model(len(tok))
    path = tmp_path / "tiny-model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_rows(n: int, seed: int = 0) -> list[dict]:
    """Small, learnable conversations: answer with the reversed word."""
    import random

    rng = random.Random(seed)
    words = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "candle", "mango", "zebra"]
    rows = []
    for _ in range(n):
        w = rng.choice(words) + str(rng.randint(0, 9))
        rows.append(
            {"messages": [{"role": "user", "content": f"reverse {w}"}, {"role": "assistant", "content": w[::-1]}]}
        )
    return rows


def interrupt_in_stage(monkeypatch, loss_class, stage_index: int, micro_batch: int) -> None:
    """SIGINT during a continual run's given training micro-batch (1-based) of the given stage (0-based),
    counted in ``loss_class.forward`` (CausalLMLoss, ClassifierLoss …)."""
    import signal

    from tuneforge.continual import session as session_module

    original_forward, original_train = loss_class.forward, session_module.ContinualRun.train
    seen = {"stage": -1, "n": 0}

    def train(self, name, k, *args, **kwargs):
        seen["stage"], seen["n"] = k, 0
        return original_train(self, name, k, *args, **kwargs)

    def forward(self, *args, **kwargs):
        if self.training and seen["stage"] == stage_index:
            seen["n"] += 1
            if seen["n"] == micro_batch:
                os.kill(os.getpid(), signal.SIGINT)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(session_module.ContinualRun, "train", train)
    monkeypatch.setattr(loss_class, "forward", forward)
