"""The optional LLM teacher: paraphrased instructions and model-written trajectories, kept only if verified.

Everything goes through an OpenAI-compatible endpoint (GPT-4o, `vllm serve`, Ollama) configured by
OPENAI_API_KEY / OPENAI_BASE_URL; responses are cached on disk, so a rerun costs nothing.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from helpers.agent.backends import OpenAIBackend
from helpers.agent.llm_client import ChatClient
from helpers.agent.policy import ModelPolicy
from helpers.agent.prompts import PromptFormat
from helpers.harness.episode import Episode, replay
from helpers.harness.evaluate import evaluate
from helpers.tasks.schema import Task
from helpers.tasks.worlds import format_amount

PARAPHRASE_PROMPT = (
    "Rewrite this request that a user sends to their payments assistant, with different wording, as a real "
    "person might type it. Keep these exact strings unchanged: {keep}. Do not add details. "
    "Reply with the rewritten request only.\n\nRequest: {instruction}"
)


def must_keep(task: Task) -> list[str]:
    """The exact strings of the request that a paraphrase may not change."""
    slots, keep = task.slots, []
    for name in [slots.get("recipient")] + list(slots.get("recipients") or []):
        if name:
            keep.append(name)
    for key in ("amount", "total"):
        if slots.get(key) is not None:
            keep.append("$" + format_amount(slots[key]))
    for key in ("note", "card_last4", "phone_number"):
        if slots.get(key):
            keep.append(str(slots[key]))
    if slots.get("days"):
        keep.append(str(slots["days"]))
    return keep


def keeps_meaning(paraphrase: str, keep: list[str]) -> bool:
    return bool(paraphrase) and all(text in paraphrase for text in keep)


@dataclass
class Paraphrases:
    tasks: list[Task]
    rejected: int


def paraphrase_tasks(client: ChatClient, tasks: list[Task], per_task: int = 1, progress: bool = True) -> Paraphrases:
    """New tasks with the same world and checks and a reworded instruction that keeps every detail."""
    jobs = [(task, k) for task in tasks for k in range(1, per_task + 1)]
    prompts = [[{"role": "user", "content": PARAPHRASE_PROMPT.format(keep=", ".join(repr(s) for s in must_keep(t)) or "none",
                                                                     instruction=t.instruction)}] for t, _ in jobs]
    replies = client.complete_many(prompts, progress=progress, desc="paraphrases", temperature=0.9, max_tokens=120,
                                   seed=None) if prompts else []
    kept, rejected = [], 0
    for (task, k), reply in zip(jobs, replies):
        text = re.sub(r"\s+", " ", reply.strip().strip('"')).strip()
        if text == task.instruction or not keeps_meaning(text, must_keep(task)):
            rejected += 1
            continue
        scenario_id = f"{task.scenario_id}-p{k}"
        variant = task.id.rsplit("_", 1)[1]
        kept.append(task.model_copy(update={"id": f"{scenario_id}_{variant}", "scenario_id": scenario_id,
                                            "instruction": text}))
    return Paraphrases(kept, rejected)


def replays_to_success(episode: Episode) -> bool:
    """Rejection sampling: the trajectory's actions, run again in a fresh world, must pass every check."""
    if not episode.result.success or not all(s.ok for s in episode.steps):
        return False
    with replay(episode.task, [s.action for s in episode.steps]) as env:
        return env.grade().success


@dataclass
class TeacherTrajectories:
    episodes: list[Episode]
    attempted: int


def teacher_trajectories(client: ChatClient, tasks: list[Task], prompt_format: PromptFormat = PromptFormat(),
                         max_steps: int = 20, progress: bool = True) -> TeacherTrajectories:
    """Let the teacher model act as the agent on each task; keep the trajectories that verify."""
    backend = OpenAIBackend(client, name=f"teacher-{client.config.model}", max_tokens=600)
    policy = ModelPolicy(backend, prompt_format)
    run = evaluate(tasks, policy, "teacher", max_steps=max_steps, batch_size=max(client.config.max_concurrency, 8),
                   progress=progress)
    return TeacherTrajectories([e for e in run.episodes if replays_to_success(e)], len(tasks))
