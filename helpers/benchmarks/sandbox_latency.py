"""Measures the sandbox's latency: one step with an API call, starting and closing an episode, whole episodes."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

from helpers.sandbox import Sandbox

TYPICAL_STEP = "balance = apis.wallet.show_balance(access_token=token)\nprint(balance)"
EXPERT_EPISODE_STEPS = 6


def fake_handler(app: str, api: str, args: list, kwargs: dict) -> dict:
    return {"balance": 1234.5, "currency": "USD"}


def summarise(seconds: list[float]) -> dict:
    ordered = sorted(seconds)
    return {
        "n": len(ordered),
        "median_ms": statistics.median(ordered) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))] * 1000,
    }


def measure_cold_start() -> float:
    """Seconds for the first Sandbox of this process, which also starts the forkserver (meaningful only if first)."""
    started = time.perf_counter()
    Sandbox(fake_handler).close()
    return time.perf_counter() - started


def measure_step_latency(n: int = 500) -> dict:
    """One sandboxed step that makes one API call and prints its result, timed in the parent."""
    with Sandbox(fake_handler) as box:
        box.execute("token = 'token-123'")
        for _ in range(20):  # warm-up
            box.execute(TYPICAL_STEP)
        timings = []
        for _ in range(n):
            started = time.perf_counter()
            box.execute(TYPICAL_STEP)
            timings.append(time.perf_counter() - started)
    return summarise(timings)


def measure_episode_start(n: int = 300) -> dict:
    """Constructing a Sandbox until its worker is ready to run a step (n, median_ms, p95_ms), and closing it
    (close_median_ms, close_p95_ms)."""
    Sandbox(fake_handler).close()  # the forkserver is started once per process, not per episode
    starts, closes = [], []
    for _ in range(n):
        started = time.perf_counter()
        box = Sandbox(fake_handler)
        ready = time.perf_counter()
        box.close()
        starts.append(ready - started)
        closes.append(time.perf_counter() - ready)
    close = summarise(closes)
    return {**summarise(starts), "close_median_ms": close["median_ms"], "close_p95_ms": close["p95_ms"]}


def measure_episodes(n: int = 100, steps: int = EXPERT_EPISODE_STEPS) -> dict:
    """Whole expert-like episodes: start, `steps` steps with an API call each, close."""
    Sandbox(fake_handler).close()
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        with Sandbox(fake_handler) as box:
            box.execute("token = 'token-123'")
            for _ in range(steps - 1):
                box.execute(TYPICAL_STEP)
        timings.append(time.perf_counter() - started)
    return summarise(timings)


def markdown_report(repetitions: int) -> str:
    cold_start = measure_cold_start()
    step = measure_step_latency(repetitions)
    start = measure_episode_start(repetitions)
    close = {"n": start["n"], "median_ms": start["close_median_ms"], "p95_ms": start["close_p95_ms"]}
    whole = measure_episodes(max(20, repetitions // 3))
    rows = [
        ("one step with an API call", step),
        ("start an episode (Sandbox() until ready)", start),
        ("close an episode", close),
        (f"whole episode: start, {EXPERT_EPISODE_STEPS} steps, close", whole),
    ]
    lines = [
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()} ({sys.implementation.name}), "
        f"{platform.system()} {platform.machine()}, running as uid {os.getuid()}",
        "",
        "| measurement | n | median (ms) | p95 (ms) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {name} | {row['n']} | {row['median_ms']:.2f} | {row['p95_ms']:.2f} |" for name, row in rows]
    lines += [
        "",
        f"First Sandbox of the process (also starts the forkserver): {cold_start * 1000:.0f} ms.",
        f"Sequential throughput: {1000 / whole['median_ms']:.0f} episodes of {EXPERT_EPISODE_STEPS} steps per second "
        f"on one core.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=300, help="timed repetitions per measurement")
    print(markdown_report(parser.parse_args().repetitions))


if __name__ == "__main__":
    main()
