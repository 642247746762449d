"""`tuneforge quickstart`: the bundled demo, as a thin wrapper over the ordinary train path.

It writes the clinical-notes task's data files, loads the shipped
`configs/quickstart.yaml` (pointing its data paths at those files and its run at
a fresh folder) and calls the same `train_from_config` that `tuneforge train`
uses. A user can copy that config and point it at their own data.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from rich.console import Console

console = Console()


def quickstart_config_path() -> Path:
    return Path(str(resources.files("tuneforge") / "configs" / "quickstart.yaml"))


def fresh_run_name(parent: Path, base: str) -> str:
    """`base`, or `base-2`, `base-3`, … : an earlier run is never overwritten."""
    name, k = base, 1
    while (parent / name).exists():
        k += 1
        name = f"{base}-{k}"
    return name


def run_quickstart(output: Path, overrides: list[str] | None = None):
    from .config import load_config
    from .runner import train_from_config
    from .tasks.clinical_notes import describe, write_task_files

    output = Path(output)
    data_dir = output / "quickstart-data"
    files = write_task_files(data_dir)
    name = fresh_run_name(output, "quickstart")
    console.print(f"[bold]tuneforge quickstart[/]: {describe()}")
    console.print(f"Data: {files['train']} and {files['eval']}\nConfig: {quickstart_config_path()}")
    config = load_config(
        quickstart_config_path(),
        [
            f"data.train={files['train']}",
            f"data.eval={files['eval']}",
            f"output_dir={output}",
            f"name={name}",
            *(overrides or []),
        ],
    )
    result = train_from_config(config, config_path=quickstart_config_path())
    before = result.summary["before"].get("json_field_accuracy")
    after = result.summary["after"].get("json_field_accuracy")
    if before is not None and after is not None:
        console.print(f"[bold]Held-out JSON field accuracy: {before:.2f} → {after:.2f}[/]")
    from .tasks.clinical_notes import INSTRUCTION

    example = "62 y/o woman c/o productive cough x5 days. Dx acute bronchitis. Rx azithromycin 500 mg daily."
    prompt = (INSTRUCTION + example).replace("\n", "\\n")
    console.print(f"Try it on a new note:\n  tuneforge generate --adapter {result.output_dir} \"$(printf '{prompt}')\"")
    shipped = f"{result.run_dir}-ollama"  # docs/EXPORT.md: a GGUF / Ollama / merged folder, checked against this run
    console.print(
        f"Ship it for llama.cpp / Ollama, then check it answers like the run:\n"
        f"  tuneforge export {result.run_dir} --format ollama --quant q8_0 --output {shipped}\n"
        f"  tuneforge verify-export {shipped} --run {result.run_dir}"
    )
    return result
