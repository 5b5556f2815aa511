"""Benchmark of the foundation: sandbox step latency, episode start-up, expert episodes per second.

Run `python -m helpers.benchmarks.foundation`; it prints a markdown table for the README.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

from helpers.agent.expert import ExpertPolicy
from helpers.benchmarks.sandbox_latency import measure_episode_start, measure_step_latency
from helpers.harness.episode import run_episode
from helpers.tasks import SPLITS, build_split
from helpers.tasks.suite import DEFAULT_SCENARIOS_PER_TYPE


def expert_throughput(split: str) -> dict:
    """Expert episodes per second over a whole split, one episode at a time."""
    tasks = build_split(split, DEFAULT_SCENARIOS_PER_TYPE[split])
    policy = ExpertPolicy()
    started = time.perf_counter()
    steps = sum(len(run_episode(task, policy).steps) for task in tasks)
    seconds = time.perf_counter() - started
    return {"split": split, "episodes": len(tasks), "steps": steps, "seconds": seconds,
            "episodes_per_s": len(tasks) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=300, help="repetitions for the latency figures")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}\n")
    step = measure_step_latency(args.repeats)
    start = measure_episode_start(args.repeats // 3)
    print("| measure | median | p95 |\n|---|---|---|")
    print(f"| one sandboxed step with an API call | {step['median_ms']:.2f} ms | {step['p95_ms']:.2f} ms |")
    print(f"| starting an episode (sandbox ready) | {start['median_ms']:.2f} ms | {start['p95_ms']:.2f} ms |")
    print("\n| split | expert episodes | steps | seconds | episodes/s |\n|---|---|---|---|---|")
    for split in SPLITS:
        row = expert_throughput(split)
        print(f"| {split} | {row['episodes']} | {row['steps']} | {row['seconds']:.1f} | {row['episodes_per_s']:.1f} |")


if __name__ == "__main__":
    main()
