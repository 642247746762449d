"""Overload test of ``tuneforge serve``: its measured capacity, then open-loop arrivals at 2× and 4× that rate.

    flock /tmp/cpu.lock python bench/serve_load.py --overload --update   # ≈ 4 min; JSON + docs/BENCHMARKS.md
    python bench/serve_load.py --overload --quick     # a smoke check (~1 min); prints, writes nothing
    python bench/serve_overload.py --render           # re-render the docs section from the JSON alone

What "holds" means, checked here and recorded: no crash (the server answers /health after each load and
its worker is alive), every request answered (200) or refused with 429 and a Retry-After header (or, past
``request_timeout_s``, a 504), nothing else (``other`` must be 0), and memory bounded (the process's RSS,
sampled every 0.25 s, peaks about where it started, at 2× as at 4×).

Setup: the embedded SmolLM2-135M-Instruct (fp32, CPU) with 2 made LoRA adapters (as ``serve_load.py``
makes them), in this process on 127.0.0.1, ``max_batch_size`` 8, ``queue_size`` 16, ``request_timeout_s``
120. Requests: non-streamed chat, ``--max-tokens`` (32) each, temperature 0, round-robin over the base and
the adapters, prompts as in ``serve_load.py``.

1. Capacity: 16 closed-loop clients (twice the batch size: the worker is never idle) send requests back to
   back for ``--capacity-seconds``; capacity = answered requests / wall time.
2. For each factor (2, 4): one request every 1 / (factor × capacity) seconds for ``--seconds``, each sent
   without waiting for earlier ones (open loop: arrivals do not slow down when the server does), then every
   outstanding request is awaited. Between loads the server goes idle.

The section of docs/BENCHMARKS.md between the ``serve_overload`` markers is rendered from the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench/results/serve_overload.json"
DOC = ROOT / "docs/BENCHMARKS.md"
BEGIN, END = "<!-- serve_overload:begin (rendered by bench/serve_overload.py) -->", "<!-- serve_overload:end -->"
FACTORS = (2, 4)
SETTINGS = {"max_batch_size": 8, "queue_size": 16, "request_timeout_s": 120.0, "batch_window_ms": 10.0}


def rss() -> int:
    """Resident bytes of this process, cheaply (no garbage collection: this is sampled under load)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def ask(client, i: int, model: str, max_tokens: int) -> dict:
    """One non-streamed chat request through the official client (no retries): its status and latency."""
    import openai
    from serve_load import prompt

    sent = time.perf_counter()
    try:
        reply = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": prompt(i)}], max_tokens=max_tokens, temperature=0
        )
    except openai.APIStatusError as exc:  # 429, 504, anything else the server answered
        result = {"i": i, "status": exc.status_code, "latency": time.perf_counter() - sent}
        if exc.status_code == 429:
            result["retry_after"] = exc.response.headers.get("retry-after")
        else:
            result["error"] = str(exc)[:200]
        return result
    except Exception as exc:  # a refused or dropped connection: counted as "other"
        return {"i": i, "status": None, "error": f"{type(exc).__name__}: {exc}"[:200], "latency": None}
    return {"i": i, "status": 200, "latency": time.perf_counter() - sent, "tokens": reply.usage.completion_tokens}


def health(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/health", timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


async def sample(worker, stop: asyncio.Event, into: dict) -> None:
    while not stop.is_set():
        into["rss_peak"] = max(into.get("rss_peak", 0), rss())
        into["queue_peak"] = max(into.get("queue_peak", 0), worker.queue.qsize())
        await asyncio.sleep(0.25)


async def capacity(client, targets: list[str], seconds: float, clients: int, max_tokens: int) -> dict:
    answered: list[dict] = []
    counter = iter(range(10**9))
    start = time.perf_counter()

    async def loop() -> None:
        for i in counter:
            if time.perf_counter() - start > seconds:
                return
            answered.append(await ask(client, i, targets[i % len(targets)], max_tokens))

    await asyncio.gather(*(loop() for _ in range(clients)))
    wall = time.perf_counter() - start
    ok = [r for r in answered if r["status"] == 200]
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "answered": len(ok),
        "other": len(answered) - len(ok),
        "other_examples": sorted({f"{r['status']} {r.get('error', '')}" for r in answered if r["status"] != 200})[:5],
        "requests_per_second": round(len(ok) / wall, 3),
        "tokens_per_second": round(sum(r["tokens"] for r in ok) / wall, 2),
    }


async def overload(client, worker, url: str, targets: list[str], rate: float, seconds: float, max_tokens: int):
    from serve_load import _round, percentile

    stats: dict = {"rss_start": rss()}
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample(worker, stop, stats))
    tasks = []
    start = time.perf_counter()
    i = 0
    while (due := start + i / rate) < start + seconds:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(ask(client, i, targets[i % len(targets)], max_tokens)))
        i += 1
    offered_wall = time.perf_counter() - start
    results = await asyncio.gather(*tasks)
    wall = time.perf_counter() - start
    stop.set()
    await sampler
    health_after = await asyncio.to_thread(health, url)
    by = {code: [r for r in results if r["status"] == code] for code in (200, 429, 504)}
    other = [r for r in results if r["status"] not in by]
    retry = sorted(int(r["retry_after"]) for r in by[429] if (r.get("retry_after") or "").isdigit())
    latencies = [r["latency"] for r in by[200]]
    return {
        "rate_offered": round(rate, 3),
        "seconds_offered": round(offered_wall, 2),
        "seconds_until_all_answered": round(wall, 2),
        "sent": len(results),
        "answered_200": len(by[200]),
        "refused_429": len(by[429]),
        "refused_429_with_retry_after": len(retry),
        "retry_after_min_max": [retry[0], retry[-1]] if retry else None,
        "timed_out_504": len(by[504]),
        "other": len(other),
        "other_examples": sorted({str(r.get("status")) + " " + r.get("error", "") for r in other})[:5],
        "goodput_requests_per_second": round(len(by[200]) / wall, 3),
        "latency_p50": _round(percentile(latencies, 50)),
        "latency_p95": _round(percentile(latencies, 95)),
        "latency_max": _round(max(latencies) if latencies else None),
        "queue_depth_peak": stats.get("queue_peak", 0),
        "rss_start_mb": round(stats["rss_start"] / 1e6, 1),
        "rss_peak_mb": round(stats.get("rss_peak", 0) / 1e6, 1),
        "rss_end_mb": round(rss() / 1e6, 1),
        "health_after": health_after,
        "worker_alive_after": worker.alive,
    }


async def idle(worker, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while (worker.busy.is_set() or worker.queue.qsize()) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def measure(url: str, worker, targets: list[str], args) -> dict:
    from openai import AsyncOpenAI

    async with AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=600) as client:
        for target in targets:  # warm-up: first-use costs stay out of the numbers
            warm = await ask(client, 0, target, 4)
            if warm["status"] != 200:
                raise RuntimeError(f"warm-up request for {target} failed: {warm}")
        await idle(worker)
        cap = await capacity(client, targets, args.capacity_seconds, 2 * SETTINGS["max_batch_size"], args.max_tokens)
        print(f"    capacity {cap['requests_per_second']:.2f} req/s", flush=True)
        if not cap["answered"]:
            raise SystemExit(f"no request was answered while measuring capacity: {cap['other_examples']}")
        loads = []
        for factor in FACTORS:
            await idle(worker)
            rate = factor * cap["requests_per_second"]
            print(f"    {factor}× capacity: {rate:.2f} req/s for {args.seconds:g} s …", flush=True)
            run = await overload(client, worker, url, targets, rate, args.seconds, args.max_tokens)
            loads.append({"factor": factor, **run})
            print(
                f"      {run['answered_200']} answered, {run['refused_429']} refused (429), "
                f"{run['timed_out_504']} timed out, {run['other']} other",
                flush=True,
            )
    return {"capacity": cap, "loads": loads}


def run(args) -> dict:
    import torch
    from serve_load import cpu_model, make_adapters

    from tuneforge.serve import ServerThread, build
    from tuneforge.serve.settings import ServeSettings

    started = time.perf_counter()
    load_before = os.getloadavg()[0]  # other processes on the machine skew every number here: recorded
    with tempfile.TemporaryDirectory(prefix="serve-overload-") as tmp:
        print("making 2 LoRA adapters …", flush=True)
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            adapters = child.submit(make_adapters, Path(tmp), 2, ["q_proj", "v_proj"], 16, 32).result()
        app, pool, worker = build(ServeSettings(adapters=adapters, **SETTINGS))
        targets = [pool.base_id, *adapters]
        with ServerThread(app) as url:
            if not url.startswith("http://127.0.0.1:"):
                raise RuntimeError(f"the server listens on {url}, not on localhost")
            measured = asyncio.run(measure(url, worker, targets, args))
    return {
        "machine": {
            "cpu": cpu_model(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_average_before": round(load_before, 2),
            "load_average_after": round(os.getloadavg()[0], 2),
        },
        "commit": _commit(),
        "date": time.strftime("%Y-%m-%d"),
        "setup": {
            "model": targets[0],
            "adapters": len(adapters),
            "max_tokens": args.max_tokens,
            "seconds_per_load": args.seconds,
            "capacity_seconds": args.capacity_seconds,
            "quick": args.quick,
            **SETTINGS,
        },
        **measured,
        "total_seconds": round(time.perf_counter() - started, 1),
    }


def _commit() -> str | None:
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def markdown(result: dict) -> str:
    m, s, cap = result["machine"], result["setup"], result["capacity"]
    lines = [
        f"Measured {result['date']} at commit {result['commit']} on {m['cpu']} ({m['cpus']} cores, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, no GPU; 1-minute load average "
        f"{m['load_average_before']:g} before, {m['load_average_after']:g} after): {s['model']} + {s['adapters']} LoRA "
        f"adapters, max_tokens {s['max_tokens']}, max_batch_size {s['max_batch_size']}, queue_size "
        f"{s['queue_size']}, request_timeout_s {s['request_timeout_s']:g}.",
        "",
        f"Capacity ({cap['clients']} closed-loop clients, {cap['seconds']:g} s): "
        f"**{cap['requests_per_second']:.2f} requests/s** ({cap['tokens_per_second']:.1f} generated tokens/s), "
        f"{cap['other']} errors.",
        "",
        "| load | offered req/s | sent | answered (200) | refused (429, with Retry-After) | timed out (504) | "
        "other | answered/s | latency p50 / p95 / max (s) | queue peak | RSS start / peak / end (MB) | "
        "/health after |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load in result["loads"]:
        retry = load["retry_after_min_max"]
        retry_text = f", Retry-After {retry[0]}–{retry[1]} s" if retry else ""
        lines.append(
            f"| {load['factor']}× | {load['rate_offered']:.2f} | {load['sent']} | {load['answered_200']} | "
            f"{load['refused_429']} ({load['refused_429_with_retry_after']}{retry_text}) | {load['timed_out_504']} | "
            f"{load['other']} | {load['goodput_requests_per_second']:.2f} | "
            f"{_s(load['latency_p50'])} / {_s(load['latency_p95'])} / {_s(load['latency_max'])} | "
            f"{load['queue_depth_peak']} | {load['rss_start_mb']:.0f} / {load['rss_peak_mb']:.0f} / "
            f"{load['rss_end_mb']:.0f} | {load['health_after']} |"
        )
    return "\n".join(lines)


def _s(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def render(result: dict, doc: Path = DOC) -> None:
    """Replace the text between the markers in ``doc`` with :func:`markdown` of ``result``."""
    text = doc.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc}: the {BEGIN!r} … {END!r} markers are missing")
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
    doc.write_text(pattern.sub(lambda _: f"{BEGIN}\n{markdown(result)}\n{END}", text))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=float, default=45.0, help="overload: seconds of arrivals per factor")
    parser.add_argument("--capacity-seconds", type=float, default=40.0, help="overload: seconds of capacity load")


def main(args) -> None:
    if args.quick:
        args.seconds, args.capacity_seconds, args.max_tokens = 8.0, 10.0, min(args.max_tokens, 8)
    result = run(args)
    problems = [
        f"{load['factor']}×: {load['other']} requests neither answered nor refused ({load['other_examples']})"
        for load in result["loads"]
        if load["other"] or load["health_after"] != 200 or not load["worker_alive_after"]
    ]
    if args.update:
        Path(args.overload_out).write_text(json.dumps(result, indent=1) + "\n")
        render(result)
        print(f"wrote {args.overload_out} and rendered {DOC.relative_to(ROOT)}")
    print(markdown(result))
    if problems:
        raise SystemExit("; ".join(problems))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", action="store_true", help=f"render {DOC.relative_to(ROOT)} from {OUT.name}")
    parser.add_argument("--out", default=str(OUT))
    cli = parser.parse_args()
    if cli.render:
        render(json.loads(Path(cli.out).read_text()))
        print(f"rendered {DOC.relative_to(ROOT)} from {cli.out}")
    else:
        parser.error("run it through bench/serve_load.py --overload (or --render here)")
