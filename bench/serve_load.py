"""Load test of ``tuneforge serve``: one base, several LoRA adapters, many concurrent streaming clients.

    flock /tmp/cpu.lock python bench/serve_load.py --update   # the full run; writes bench/results/serve_load.json
    python bench/serve_load.py --quick        # a smoke check (~40 s on 2 cores); prints, writes nothing
    python bench/serve_load.py --adapter notes=runs/notes --adapter chat=runs/chat   # real adapters
    flock /tmp/cpu.lock python bench/serve_load.py --overload --update   # 2× and 4× capacity: serve_overload.py

Flags: ``--adapters 3`` (made LoRA adapters), ``--adapter NAME=PATH`` (repeatable; replaces the made ones),
``--model`` (the base; default the adapters' base, else the embedded model), ``--target-modules q_proj,v_proj``
and ``--rank 16`` (made adapters; alpha = 2·rank), ``--clients 8``, ``--requests 48``, ``--max-tokens 32``,
``--max-batch-size 8``, ``--batch-window-ms 10``, ``--time-limit 300`` (seconds, per mode), ``--threads``
(torch threads), ``--update`` (write ``--out``, default bench/results/serve_load.json), ``--quick`` (at most
2 adapters, 4 clients, 8 requests, 8 tokens, 60 s).

Setup: the embedded SmolLM2-135M-Instruct (fp32, CPU) with ``--adapters`` LoRA adapters made for it here,
in a temporary folder, without training (peft ``LoraConfig(r=16, lora_alpha=32, target_modules=q_proj,v_proj,
init_lora_weights=False)``, seed 1000 + i: random non-zero B, so each adapter answers differently from the
base), saved with the base tokenizer; or real adapters with ``--adapter name=path`` (run folders accepted).
The server runs in this process (``build(ServeSettings(...))`` + ``ServerThread``) on 127.0.0.1, on a free
port; nothing listens elsewhere.

Load: ``--clients`` concurrent clients (asyncio, the official ``openai.AsyncOpenAI``, no retries) send
``--requests`` chat requests in all, request i for target i mod (adapters + 1), round-robin over the base and
the adapters, each a short prompt of its own, ``max_tokens`` = ``--max-tokens``, temperature 0, streamed with
``stream_options={"include_usage": True}``. No new request starts after ``--time-limit`` seconds. The same
load runs twice, each on a freshly built server: ``mixed`` (``mixed_batches=True``: rows for different
adapters and the base share one batch, peft's ``adapter_names=``) and ``one adapter`` (``mixed_batches=False``:
a gathered set of requests is split per adapter and the batches run one after another). One warm-up request
per target (the same prompt for all) runs before each timed load.

The numbers, per mode:

* req/s: completed requests over the load's wall time (first request sent → last answer ended);
* tok/s: generated tokens (the sum of ``usage.completion_tokens``) over the same wall time;
* latency p50 / p95: request sent → stream ended (``[DONE]``), seconds;
* TTFT p50 / p95: request sent → first chunk carrying text (not the empty role chunk), seconds;
* errors: requests that raised or came back without usage (must be 0);
* batches, rows/batch: the worker's counters over the timed load (decoded batches; requests per batch);
* same text: requests whose answer is the same in both modes (greedy; a mix-up shows here first).

Memory, measured once on a pool built the way ``build`` builds it (base loaded, then each adapter registered
and loaded): ``pool.base.adapter_bytes(name)``, the bytes of the adapter's own tensors once loaded, against
the expected r·(d_in + d_out)·(bytes per element) summed over the targeted modules of every layer (shapes
from the model's config); and the process's resident memory (RSS): before the base, with the base (its
weights are memory-mapped from the safetensors file, so one forward pages them in first), and the growth
while each adapter loads (its tokenizer is looked up before and counted apart: ``build`` loads one tokenizer
per distinct set of tokenizer files, so adapters saved with the base's tokenizer share the base's). The made adapters are written by a child process, so that models loaded to make them do not
linger in this process's RSS. RSS is the allocator's view, coarse next to the tensor bytes.

Also reported: one prompt sent to every target during the warm-up, and how many different answers came back
(base + N adapters should give N + 1: each adapter is really applied).

On 2 cores, run it on a quiet machine (``flock /tmp/cpu.lock`` with the other benches): decoding is many small
ops and stalls whenever another process takes a core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import importlib
import json
import multiprocessing
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import serve_overload

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench/results/serve_load.json"
MODES = (("mixed", True), ("one adapter", False))
TOPICS = [
    "rain",
    "a compass",
    "bread",
    "the moon",
    "a library",
    "bees",
    "a bicycle",
    "glass",
    "volcanoes",
    "a violin",
    "tides",
    "coffee",
    "a lighthouse",
    "maps",
    "snow",
    "clocks",
    "a bridge",
    "salt",
    "owls",
    "paper",
    "a river",
    "chess",
    "wind",
    "a kite",
]
ASKS = [
    "In one sentence, what is {t}?",
    "Give two facts about {t}.",
    "Write a short line of poetry about {t}.",
    "Why do people like {t}?",
    "Describe {t} to a child.",
    "Name one use of {t}.",
]
LORA_SEED = 1000


# ---------------------------------------------------------------------------- adapters and memory


def make_adapters(folder: Path, count: int, targets: list[str], r: int, alpha: int) -> dict[str, str]:
    """``count`` random LoRA adapters for the embedded model, saved (with the base tokenizer) under ``folder``."""
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.load import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(None)
    adapters = {}
    for i in range(count):
        base = load_causal_lm(None)
        torch.manual_seed(LORA_SEED + i)
        model = get_peft_model(
            base,
            LoraConfig(
                r=r,
                lora_alpha=alpha,
                target_modules=targets,
                lora_dropout=0.0,
                init_lora_weights=False,
                task_type="CAUSAL_LM",
            ),
        )
        name = f"task{i}"
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        adapters[name] = str(folder / name)
        del model, base
    gc.collect()
    return adapters


def rss_bytes() -> int:
    """Resident memory of this process, after a garbage collection and handing freed heap back to the system.

    Without ``malloc_trim`` the allocator keeps what loading the base freed and serves the adapters from it,
    and the RSS hardly moves while they load.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def module_shapes(config) -> dict[str, tuple[int, int]]:
    """(d_in, d_out) of every LoRA-targetable linear of one decoder layer, from a Llama-style config."""
    hidden, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return {
        "q_proj": (hidden, heads * head_dim),
        "k_proj": (hidden, kv_heads * head_dim),
        "v_proj": (hidden, kv_heads * head_dim),
        "o_proj": (heads * head_dim, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }


def expected_bytes(model, folder: Path) -> int | None:
    """r·(d_in + d_out)·bytes per element over the adapter's targeted modules and layers; None: not computable."""
    config_file = folder / "adapter_config.json"
    if not config_file.exists():
        return None
    adapter = json.loads(config_file.read_text())
    if adapter.get("peft_type") != "LORA" or adapter.get("layers_to_transform") or adapter.get("rank_pattern"):
        return None
    shapes = module_shapes(model.config)
    targets = adapter.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    if not targets or any(t not in shapes for t in targets):
        return None
    element = next(model.parameters()).element_size()
    layers = model.config.num_hidden_layers
    return sum(adapter["r"] * sum(shapes[t]) for t in targets) * layers * element


def measure_memory(model_name: str | None, adapters: dict[str, str]) -> dict:
    """Base alone, then each adapter registered and loaded as ``build_pool`` does it: RSS and tensor bytes."""
    import torch

    from tuneforge.adapters.inference import describe, tokenizer_folder
    from tuneforge.serve.pool import build_pool

    importlib.import_module("peft")  # now, so that its import does not count as the first adapter's memory

    specs = {name: describe(name, path) for name, path in adapters.items()}
    first = next(iter(specs.values()), None)
    base_name = model_name or (first.base if first else None)
    gc.collect()
    before_base = rss_bytes()
    pool = build_pool(base_name, {}, max_loaded=max(1, len(specs)))
    with torch.inference_mode():  # the weights are memory-mapped: one forward pages them in
        pool.base.model(input_ids=torch.tensor([[pool.base.tokenizer.eos_token_id or 0]]))
    before = rss_bytes()
    rows = []
    for name, spec in specs.items():
        tokenizer = pool.tokenizers.get(tokenizer_folder(spec.path) or base_name)  # shared when the files are equal
        pool.register(spec, tokenizer, base_name=base_name)
        start = rss_bytes()
        pool.base.ensure_loaded([name])
        rows.append(
            {
                "adapter": name,
                "kind": spec.kind,
                "bytes": pool.base.adapter_bytes(name),
                "expected_bytes": expected_bytes(pool.base.model, spec.path),
                "rss_added": rss_bytes() - start,
            }
        )
    after = rss_bytes()
    result = {
        "rss_before_base": before_base,
        "rss_base_only": before,
        "rss_with_adapters": after,
        "rss_added_by_adapters": sum(row["rss_added"] for row in rows),
        "rss_added_with_tokenizers": after - before,
        "adapters": rows,
    }
    del pool
    gc.collect()
    return result


# ---------------------------------------------------------------------------- load


def prompt(i: int) -> str:
    return ASKS[i % len(ASKS)].format(t=TOPICS[(i // len(ASKS) + i) % len(TOPICS)])


async def one_request(client, i: int, model: str, max_tokens: int) -> dict:
    sent = time.perf_counter()
    first = None
    pieces: list[str] = []
    usage = None
    try:
        stream = await client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt(i)}],
            max_tokens=max_tokens,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                if choice.delta and choice.delta.content:
                    if first is None:
                        first = time.perf_counter()
                    pieces.append(choice.delta.content)
            if chunk.model != model:
                raise RuntimeError(f"the response names model {chunk.model!r}, not {model!r}")
    except Exception as exc:  # counted, never retried
        return {"i": i, "model": model, "error": f"{type(exc).__name__}: {exc}"}
    ended = time.perf_counter()
    if usage is None:
        return {"i": i, "model": model, "error": "no usage in the stream"}
    return {
        "i": i,
        "model": model,
        "sent": sent,
        "ended": ended,
        "latency": ended - sent,
        "ttft": (first - sent) if first is not None else None,
        "completion_tokens": usage.completion_tokens,
        "text": "".join(pieces),
    }


async def warm_up(client, targets: list[str]) -> dict[str, str]:
    """The same short request to every target, not timed (first-use costs stay out); {target: its answer}."""
    answers = {}
    for target in targets:
        warm = await one_request(client, 0, target, 8)
        if "error" in warm:
            raise RuntimeError(f"warm-up request for {target} failed: {warm['error']}")
        answers[target] = warm["text"]
    return answers


async def run_load(client, targets: list[str], args) -> tuple[list[dict], float, bool]:
    """``args.requests`` requests over ``args.clients`` clients; (results, wall seconds, time limit hit)."""
    results: list[dict] = []
    counter = iter(range(args.requests))  # shared: each client takes the next request number
    start = time.perf_counter()
    deadline = start + args.time_limit
    hit = False

    async def client_loop() -> None:
        nonlocal hit
        for i in counter:
            if time.perf_counter() > deadline:
                hit = True
                return
            results.append(await one_request(client, i, targets[i % len(targets)], args.max_tokens))

    await asyncio.gather(*(client_loop() for _ in range(args.clients)))
    done = [r for r in results if "error" not in r]
    wall = (max(r["ended"] for r in done) - start) if done else time.perf_counter() - start
    return sorted(results, key=lambda r: r["i"]), wall, hit


async def load_against(url: str, worker, targets: list[str], args):
    """Warm up, then the timed load: (results, wall, time limit hit, batches, rows, warm-up answers).

    batches and rows: the worker's counters during the timed load only.
    """
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=args.time_limit + 120)
    try:
        warm = await warm_up(client, targets)
        await idle(worker)
        batches, rows = worker.batches, worker.rows
        results, wall, hit = await run_load(client, targets, args)
        await idle(worker)
        return results, wall, hit, worker.batches - batches, worker.rows - rows, warm
    finally:
        await client.close()


async def idle(worker, timeout: float = 30.0) -> None:
    """Wait for the worker to finish its batch: it counts a batch only after its rows have answered."""
    deadline = time.monotonic() + timeout
    while (worker.busy.is_set() or worker.queue.qsize()) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between the closest ranks (numpy's default)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    position = (len(values) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def run_mode(mixed: bool, adapters: dict[str, str], args) -> dict:
    """Build a server with ``mixed_batches=mixed``, run the load against it, return its numbers."""
    from tuneforge.serve import ServerThread, build
    from tuneforge.serve.settings import ServeSettings

    settings = ServeSettings(
        model=args.model,
        adapters=adapters,
        max_batch_size=args.max_batch_size,
        batch_window_ms=args.batch_window_ms,
        max_loaded_adapters=max(1, len(adapters)),
        mixed_batches=mixed,
        queue_size=max(64, 2 * args.clients),
        max_tokens_limit=max(1024, args.max_tokens),
    )
    app, pool, worker = build(settings)
    targets = [pool.base_id, *adapters]
    with ServerThread(app) as url:
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server listens on {url}, not on localhost")
        results, wall, hit, batches, rows, warm = asyncio.run(load_against(url, worker, targets, args))
    peft_can_mix = pool.base.mixed_batches
    del app, pool, worker
    gc.collect()
    done = [r for r in results if "error" not in r]
    tokens = sum(r["completion_tokens"] for r in done)
    latencies, ttfts = [r["latency"] for r in done], [r["ttft"] for r in done]
    return {
        "mode": "mixed" if mixed else "one adapter",
        "mixed_batches": mixed,
        "peft_can_mix": peft_can_mix,
        "targets": targets,
        "requests_sent": len(results),
        "completed": len(done),
        "errors": len(results) - len(done),
        "not_sent_time_limit": args.requests - len(results),
        "error_messages": sorted({r["error"] for r in results if "error" in r})[:5],
        "time_limit_hit": hit,
        "wall_seconds": round(wall, 3),
        "requests_per_second": round(len(done) / wall, 3) if wall else None,
        "tokens_per_second": round(tokens / wall, 2) if wall else None,
        "completion_tokens": tokens,
        "latency_p50": _round(percentile(latencies, 50)),
        "latency_p95": _round(percentile(latencies, 95)),
        "ttft_p50": _round(percentile(ttfts, 50)),
        "ttft_p95": _round(percentile(ttfts, 95)),
        "batches": batches,
        "rows": rows,
        "rows_per_batch": round(rows / batches, 2) if batches else None,
        "warm_up_answers": warm,
        "answers": {str(r["i"]): r["text"] for r in done},
    }


# ---------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def markdown(result: dict) -> str:
    m, s = result["machine"], result["setup"]
    lines = [
        f"CPU: {m['cpu']} ({m['cpus']} cores), torch threads: {m['torch_threads']}; "
        f"{s['model']} + {len(s['adapters'])} adapter{'s' * (len(s['adapters']) != 1)} "
        f"({s['adapter_recipe']}); {s['clients']} clients, "
        f"{s['requests']} requests, max_tokens {s['max_tokens']}, max_batch_size {s['max_batch_size']}, "
        f"batch window {s['batch_window_ms']:g} ms",
        "",
        "| batching | done | errors | req/s | tok/s | latency p50 / p95 (s) | TTFT p50 / p95 (s) | batches | "
        "rows/batch | same text |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        same = result["same_text_across_modes"]
        lines.append(
            f"| {run['mode']} | {run['completed']}/{s['requests']} | {run['errors']} | "
            f"{run['requests_per_second']:.2f} | {run['tokens_per_second']:.1f} | "
            f"{_s(run['latency_p50'])} / {_s(run['latency_p95'])} | {_s(run['ttft_p50'])} / {_s(run['ttft_p95'])} | "
            f"{run['batches']} | {_s(run['rows_per_batch'])} | {same['same']}/{same['compared']} |"
        )
    stopped = [
        f"{run['mode']}: the time limit ({s['time_limit_s']:g} s) stopped it after {run['requests_sent']} requests"
        for run in result["runs"]
        if run["time_limit_hit"]
    ]
    if stopped:
        lines += ["", *stopped]
    mem = result["memory"]
    lines += [
        "",
        "| adapter | loaded tensors (MB) | expected r·(d_in+d_out)·bytes (MB) | RSS added (MB) |",
        "|---|---|---|---|",
    ]
    for row in mem["adapters"]:
        expected = "–" if row["expected_bytes"] is None else f"{row['expected_bytes'] / 1e6:.3f}"
        lines.append(f"| {row['adapter']} | {row['bytes'] / 1e6:.3f} | {expected} | {row['rss_added'] / 1e6:.1f} |")
    lines.append(
        f"\nRSS: {mem['rss_before_base'] / 1e6:.0f} MB before the base, {mem['rss_base_only'] / 1e6:.0f} MB "
        f"with the base, {mem['rss_with_adapters'] / 1e6:.0f} MB with the adapters: "
        f"+{mem['rss_added_by_adapters'] / 1e6:.1f} MB loading them, "
        f"+{mem['rss_added_with_tokenizers'] / 1e6:.1f} MB with their tokenizers"
    )
    d = result["one_prompt_every_target"]
    lines.append(
        f"One prompt to every target: {d['distinct_answers']} different answers from {d['targets']} targets "
        "(base + adapters)."
    )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapters", type=int, default=3, help="LoRA adapters to make for the embedded model")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve this adapter (folder or run folder) instead of made ones; repeatable",
    )
    parser.add_argument("--model", default=None, help="the base (default: the adapters' base, else the embedded one)")
    parser.add_argument("--target-modules", default="q_proj,v_proj", help="made adapters' LoRA targets")
    parser.add_argument("--rank", type=int, default=16, help="made adapters' r (lora_alpha = 2r)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-window-ms", type=float, default=10.0)
    parser.add_argument(
        "--time-limit", type=float, default=300.0, help="seconds per mode after which no new request starts"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke check: 2 adapters, 4 clients, 8 requests, 8 tokens, 60 s limit"
    )
    parser.add_argument("--update", action="store_true", help=f"write the results to {OUT.relative_to(ROOT)}")
    parser.add_argument("--out", default=str(OUT), help="where --update writes")
    parser.add_argument(
        "--overload",
        action="store_true",
        help="instead: capacity, then 2× and 4× it, open loop (bench/serve_overload.py; --update renders the docs)",
    )
    parser.add_argument("--overload-out", default=str(ROOT / "bench/results/serve_overload.json"))
    serve_overload.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.adapters, args.clients, args.requests = (
            min(args.adapters, 2),
            min(args.clients, 4),
            min(args.requests, 8),
        )
        args.max_tokens, args.time_limit = min(args.max_tokens, 8), min(args.time_limit, 60.0)
    for value, flag in (
        (args.clients, "--clients"),
        (args.requests, "--requests"),
        (args.max_tokens, "--max-tokens"),
        (args.max_batch_size, "--max-batch-size"),
    ):
        if value < 1:
            parser.error(f"{flag} must be at least 1")
    if args.adapters < 0 or args.time_limit <= 0:
        parser.error("--adapters must be 0 or more and --time-limit positive")
    for item in args.adapter:
        if "=" not in item:
            parser.error(f"--adapter {item}: expected NAME=PATH")
    return args


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.overload:
        serve_overload.main(args)
        return
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        if args.adapter:
            adapters = dict(item.split("=", 1) for item in args.adapter)
            recipe = "given"
        else:
            targets = args.target_modules.split(",")
            print(f"making {args.adapters} LoRA adapters (r={args.rank}, {','.join(targets)}) …", flush=True)
            # in a child process: the models loaded to make them would otherwise blur this process's RSS
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
                adapters = child.submit(
                    make_adapters, Path(tmp), args.adapters, targets, args.rank, 2 * args.rank
                ).result()
            recipe = f"LoRA r={args.rank}, alpha={2 * args.rank}, {'+'.join(targets)}, random init"
        print("memory per adapter …", flush=True)
        memory = measure_memory(args.model, adapters)
        runs = []
        for mode, mixed in MODES:
            print(f"load, {mode} batches: {args.clients} clients, {args.requests} requests …", flush=True)
            run = run_mode(mixed, adapters, args)
            print(f"    {run['completed']} done, {run['errors']} errors, {run['wall_seconds']:.1f} s", flush=True)
            runs.append(run)
    first, second = (run["answers"] for run in runs)
    both = sorted(set(first) & set(second), key=int)
    same = {
        "compared": len(both),
        "same": sum(first[k] == second[k] for k in both),
        "differ": [int(k) for k in both if first[k] != second[k]][:10],
    }
    base_id = runs[0]["targets"][0]
    warm = runs[0]["warm_up_answers"]  # one prompt, every target: adapters that really apply answer differently
    distinct = {"targets": len(warm), "distinct_answers": len(set(warm.values())), "answers": warm}
    result = {
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "torch": torch.__version__,
        },
        "setup": {
            "model": base_id,
            "adapters": list(adapters),
            "adapter_recipe": recipe,
            "clients": args.clients,
            "requests": args.requests,
            "max_tokens": args.max_tokens,
            "max_batch_size": args.max_batch_size,
            "batch_window_ms": args.batch_window_ms,
            "time_limit_s": args.time_limit,
            "temperature": 0,
            "stream": True,
            "quick": args.quick,
        },
        "memory": memory,
        "runs": [{k: v for k, v in run.items() if k not in ("answers", "warm_up_answers")} for run in runs],
        "same_text_across_modes": same,
        "one_prompt_every_target": distinct,
        "sample_answers": {
            runs[0]["targets"][int(k) % len(runs[0]["targets"])] + f" #{k}": first[k]
            for k in both[: len(runs[0]["targets"])]
        },
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    if args.update:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {args.out}")
    print(markdown(result))
    errors = sum(run["errors"] for run in runs)
    if errors:
        raise SystemExit(f"{errors} requests failed: {[m for run in runs for m in run['error_messages']]}")


if __name__ == "__main__":
    main()
