"""A newcomer's first commands print tuneforge's lines only: no library warnings or raw bars."""

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str, **env) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    full.update({"HF_HUB_OFFLINE": "1", **env})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, cwd=ROOT, timeout=300)


def test_bitsandbytes_kernel_fetch_warning_is_dropped_and_others_kept():
    """bitsandbytes logs "Failed to load CPU gemm_4bit_forward" on import on AVX512-BF16 CPUs, and
    peft imports it for every LoRA, quantized or not."""
    from tuneforge.quiet import silence_library_noise

    silence_library_noise()
    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please ...", "offline")
        logger.warning("a different bitsandbytes warning")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "a different bitsandbytes warning\n"


def test_transformers_progress_bars_are_off_once_transformers_is_imported():
    code = "import tuneforge, transformers.utils.logging as l; print(l.is_progress_bar_enabled())"
    assert _run(code).stdout.strip() == "False"
    # the user's explicit choice wins
    assert _run(code, HF_HUB_DISABLE_PROGRESS_BARS="0").stdout.strip() == "True"
    # and nothing is patched before transformers is imported: importing tuneforge stays light
    light = _run("import sys, tuneforge; print('transformers' in sys.modules, 'torch' in sys.modules)")
    assert light.stdout.strip() == "False False"


def test_gguf_conversion_loop_uses_our_progress_not_raw_tqdm(capfd, monkeypatch):
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from tuneforge.models.embedded import _gguf_progress_as_ours

    original = gguf_utils.tqdm
    monkeypatch.setenv("TUNEFORGE_NO_PROGRESS", "0")
    with _gguf_progress_as_ours():
        assert gguf_utils.tqdm is not original
        assert list(gguf_utils.tqdm(range(5), desc="Converting and de-quantizing GGUF tensors...")) == list(range(5))
    assert gguf_utils.tqdm is original
    err = capfd.readouterr().err
    assert "Converting and de-quantizing" not in err and "it/s]" not in err


def test_validate_quickstart_prints_only_its_own_lines():
    proc = subprocess.run(
        [sys.executable, "-m", "tuneforge", "validate", "configs/quickstart.yaml"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "valid"
    assert all(line.startswith("✓") for line in lines[:-1]), lines
