"""Multi-turn rollouts: a whole episode (or a whole chat with the simulated user) as one GRPO sample.

A rollout is laid out exactly as the agent is trained and evaluated: the opening messages, then the
model's reply, then what the world answers (the code's output, or the user's message), then the next
reply, and so on until the task is complete, the step limit is reached or the chat has acted. The ids
the model wrote are kept as written (`env_mask` 1); everything else between them is in the sequence for
the model to read but out of the loss (`env_mask` 0). The trajectory ends on the model's end-of-turn id.

What happened is kept as data (`Outcome`): the graded checks, collateral damage, and for every step
whether its code failed, ran without touching an app, or ran and called one. Rewards read those fields,
never the trajectory's text.
"""
from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence

from helpers.agent.policy import reply_to_action
from helpers.agent.prompts import EPISODE_OUTPUT, ActionParseError, PromptFormat, parse_action
from helpers.agent.simulated_user import question_of
from helpers.agent.turns import TurnTokens
from helpers.evaluation.chats import simulated_user, user_turn
from helpers.harness.episode import Environment, Episode, finish_episode, take_action
from helpers.rl.pool import RolloutItem
from helpers.sandbox import Limits
from helpers.tasks.grading import TaskResult
from helpers.tasks.schema import NoOtherChanges, StatusIs

# Rollouts run many sandboxes side by side; a step that loops gets less time than at evaluation.
ROLLOUT_LIMITS = Limits(step_wall_seconds=2.0, step_cpu_seconds=1.0)


class Sampler(Protocol):
    """Samples the model's next reply to each token sequence (ids, ending with an end-of-turn id or cut short)."""

    def replies(self, sequences: list[list[int]], max_new_tokens: int, stop_at_json: bool) -> list[list[int]]:
        ...


@dataclass(frozen=True)
class RolloutSettings:
    max_steps: int = 6  # the agent's replies in an episode, as at evaluation
    chat_max_turns: int = 4  # replies before acting in a chat, as at evaluation
    reply_tokens: int = 192  # one episode reply
    chat_reply_tokens: int = 320  # a chat's action is one long reply (log in, look up, act)
    max_completion_tokens: int = 2048  # the whole trajectory after the opening; an episode past it ends there
    observation_chars: int = 300
    limits: Limits = ROLLOUT_LIMITS
    workers: int = 8  # sandboxes stepped at once

    @classmethod
    def from_profile(cls, params: dict) -> "RolloutSettings":
        """The settings a profile's `04` plays with (its `parameters` values, the defaults where it has none)."""
        return cls(max_steps=params.get("max_steps", cls.max_steps),
                   reply_tokens=params.get("max_new_tokens", cls.reply_tokens),
                   chat_reply_tokens=params.get("chat_max_new_tokens", cls.chat_reply_tokens),
                   max_completion_tokens=params.get("max_completion_length", cls.max_completion_tokens),
                   observation_chars=params.get("observation_chars", cls.observation_chars))


@dataclass
class Outcome:
    """What one rollout did, as data."""

    kind: str  # episode | chat
    task_id: str
    scenario: str
    success: bool = False
    goal_checks: int = 0  # the checks that ask for the task's own work (not "no other changes", not "completed")
    goal_passed: int = 0
    collateral: bool = False  # the world changed in a way no check asks for
    completed: bool = False  # complete_task was called (episodes) or the chat acted
    steps_api: int = 0  # steps whose code ran and called an app
    steps_quiet: int = 0  # steps whose code ran without calling any app (printing a fake success, say)
    steps_failed: int = 0  # steps whose code failed, or replies that held no usable code (in a chat: nor a question)
    turns: int = 0  # the model's replies
    asked: bool = False  # a chat: the model asked for a detail before acting
    missing: int = 0  # a chat: details the user's opening left out
    truncated: bool = False  # the trajectory hit max_completion_tokens
    ended: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Rollout:
    item: RolloutItem
    prompt_ids: list[int]
    completion_ids: list[int] = field(default_factory=list)
    env_mask: list[int] = field(default_factory=list)
    outcome: Outcome | None = None
    replies: list[str] = field(default_factory=list)  # the text of each reply, for reading a rollout

    def add(self, ids: Sequence[int], trained: bool) -> None:
        self.completion_ids.extend(ids)
        self.env_mask.extend([1 if trained else 0] * len(ids))


def grade_outcome(outcome: Outcome, item: RolloutItem, result: TaskResult) -> None:
    """Fill the graded fields: `result.checks` lists the task's checks in order, "no other changes" last."""
    judged = [check for check in item.task.checks if not isinstance(check, NoOtherChanges)]
    goal = [(check, r) for check, r in zip(judged, result.checks)
            if not (isinstance(check, StatusIs) and check.expected == "success")]
    outcome.success = result.success
    outcome.goal_checks = len(goal)
    outcome.goal_passed = sum(r.passed for _, r in goal)
    if any(isinstance(check, NoOtherChanges) for check in item.task.checks):
        outcome.collateral = not result.checks[-1].passed


def _count_step(outcome: Outcome, ok: bool, api_calls: int) -> None:
    if not ok:
        outcome.steps_failed += 1
    elif api_calls:
        outcome.steps_api += 1
    else:
        outcome.steps_quiet += 1


class _Episode:
    """One episode rollout in flight: its environment, the harness's record of steps, and the ids so far."""

    def __init__(self, item: RolloutItem, turns: TurnTokens, settings: RolloutSettings):
        self.item, self.turns, self.settings = item, turns, settings
        self.rollout = Rollout(item, turns.opening(item.prompt))
        self.outcome = Outcome("episode", item.task.id, item.task.scenario)
        self.env = Environment(item.task, settings.limits)
        self.episode = Episode(item.task)
        self.started = time.perf_counter()
        self.done = False

    @property
    def sequence(self) -> list[int]:
        return self.rollout.prompt_ids + self.rollout.completion_ids

    @property
    def reply_tokens(self) -> int:
        return self.settings.reply_tokens

    stop_at_json = True

    def take(self, reply_ids: list[int], text: str) -> None:
        _add_reply(self.rollout, reply_ids, text, self.turns.end_of_turn)
        self.outcome.turns += 1
        action = reply_to_action(text)
        take_action(self.env, self.episode, action)
        step = self.episode.steps[-1] if self.episode.steps and not action.gave_up else None
        if step is not None:
            _count_step(self.outcome, step.ok, step.api_calls)
        if len(self.episode.steps) >= self.settings.max_steps or self.env.done or self.episode.error:
            self.finish()
            return
        observation = EPISODE_OUTPUT.format(observation=_clip(step.observation, self.settings.observation_chars))
        following = self.turns.after_reply([{"role": "user", "content": observation}])
        if len(self.rollout.completion_ids) + len(following) + self.reply_tokens > self.settings.max_completion_tokens:
            self.outcome.truncated = True
            self.finish()
            return
        self.rollout.add(following, trained=False)

    def finish(self) -> None:
        finish_episode(self.env, self.episode, self.settings.max_steps, self.started)
        self.outcome.completed = self.env.world.completed
        self.outcome.ended = "completed" if self.outcome.completed else (self.episode.error or "stopped")
        grade_outcome(self.outcome, self.item, self.episode.result)
        self.rollout.outcome = self.outcome
        self.done = True

    def close(self) -> None:
        self.env.close()


class _Chat:
    """One chat rollout in flight: the simulated user, and the ids so far. It ends once the model acts."""

    stop_at_json = True

    def __init__(self, item: RolloutItem, turns: TurnTokens, settings: RolloutSettings):
        self.item, self.turns, self.settings = item, turns, settings
        self.rollout = Rollout(item, turns.opening(item.prompt))
        self.outcome = Outcome("chat", item.task.id, item.task.scenario, missing=len(item.case.missing))
        self.user = simulated_user(item.case)
        self.done = False

    @property
    def sequence(self) -> list[int]:
        return self.rollout.prompt_ids + self.rollout.completion_ids

    @property
    def reply_tokens(self) -> int:
        return self.settings.chat_reply_tokens

    def take(self, reply_ids: list[int], text: str) -> None:
        _add_reply(self.rollout, reply_ids, text, self.turns.end_of_turn)
        self.outcome.turns += 1
        try:
            code = parse_action(text).code
        except ActionParseError:
            code = None
        if code is not None:
            with Environment(self.item.task, self.settings.limits) as env:
                result = env.execute(code)
                _count_step(self.outcome, result.ok, result.successful_api_calls)
                self.outcome.completed = True
                grade_outcome(self.outcome, self.item, env.grade())
                self.outcome.success = self.outcome.success and result.ok
            self._end("acted")
            return
        if question_of(text) is None:
            # neither an action nor a question: a broken or cut-off reply (a chat that degenerates into repeating
            # itself until the token limit) is a failed step, as in an episode, not a free pass to the next turn
            self.outcome.steps_failed += 1
        answer, asked = user_turn(self.user, text)
        self.outcome.asked = self.outcome.asked or asked
        if self.outcome.turns >= self.settings.chat_max_turns:
            with Environment(self.item.task, self.settings.limits) as env:
                grade_outcome(self.outcome, self.item, env.grade())
            self._end("max_turns")
            return
        following = self.turns.after_reply([{"role": "user", "content": answer}])
        self.rollout.add(following, trained=False)

    def _end(self, reason: str) -> None:
        self.outcome.ended = reason
        self.rollout.outcome = self.outcome
        self.done = True

    def close(self) -> None:
        pass


def _add_reply(rollout: Rollout, reply_ids: list[int], text: str, end_of_turn: int) -> None:
    rollout.add(reply_ids, trained=True)
    rollout.replies.append(text)
    if not reply_ids or reply_ids[-1] != end_of_turn:
        # the reply stopped at the end of its JSON object or its length: the template closes the turn
        rollout.add([end_of_turn], trained=False)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more characters]"


def play(items: Sequence[RolloutItem], sampler: Sampler, tokenizer, settings: RolloutSettings = RolloutSettings(),
         turns: TurnTokens | None = None) -> list[Rollout]:
    """Play every item to its end, all of them side by side: one batched generation per round of replies, and the
    round's code run in parallel sandboxes. Returns the rollouts in the order of `items`."""
    turns = turns or TurnTokens(tokenizer)
    flights = [(_Episode if item.kind == "episode" else _Chat)(item, turns, settings) for item in items]
    try:
        with ThreadPoolExecutor(max_workers=settings.workers) as pool:
            while True:
                active = [f for f in flights if not f.done]
                if not active:
                    break
                # episodes and chats take replies of different lengths: one generation call for each length
                for reply_tokens in sorted({f.reply_tokens for f in active}):
                    group = [f for f in active if f.reply_tokens == reply_tokens]
                    replies = sampler.replies([f.sequence for f in group], reply_tokens, stop_at_json=True)
                    texts = [tokenizer.decode(r, skip_special_tokens=True).strip() for r in replies]
                    list(pool.map(lambda args: args[0].take(args[1], args[2]), zip(group, replies, texts)))
    finally:
        for flight in flights:
            flight.close()
    return [f.rollout for f in flights]


def local_sampler(model, tokenizer, temperature: float, top_p: float = 1.0, seed: int = 0,
                  dtype=None, **decoder_options) -> "DecoderSampler | GenerateSampler":
    """The sampler for a model in this process: the project's decoder, or transformers' `generate` for weights the
    decoder cannot read (4-bit, another architecture). `decoder_options` go to the `Decoder` (batch size, drafts)."""
    from helpers.agent.decoding import Decoder, DecoderWeights, TokenText

    weights = DecoderWeights.from_model(model, dtype)
    if weights is None:
        return GenerateSampler(model, tokenizer, temperature, top_p, seed)
    token_text = decoder_options.pop("token_text", None) or TokenText(tokenizer)  # a caller may keep one
    decoder = Decoder(model, [tokenizer.eos_token_id], weights=weights, token_text=token_text, **decoder_options)
    return DecoderSampler(decoder, temperature, top_p, seed=seed)


class DecoderSampler:
    """Replies sampled by the project's decoder (`helpers.agent.decoding`): the CPU path."""

    def __init__(self, decoder, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0):
        import torch

        self.decoder, self.temperature, self.top_p = decoder, temperature, top_p
        self.generator = torch.Generator(device=decoder.weights.device).manual_seed(seed)

    def replies(self, sequences: list[list[int]], max_new_tokens: int, stop_at_json: bool) -> list[list[int]]:
        return self.decoder.generate(sequences, temperature=self.temperature, top_p=self.top_p,
                                     generator=self.generator, stop_at_json=stop_at_json,
                                     max_new_tokens=max_new_tokens)


class GenerateSampler:
    """Replies sampled by transformers' `generate`: for models the decoder does not handle (4-bit weights, other
    architectures). Replies end at the end-of-turn id, the end of their JSON object, or `max_new_tokens`."""

    def __init__(self, model, tokenizer, temperature: float = 1.0, top_p: float = 1.0, seed: int = 0):
        self.model, self.tokenizer, self.temperature, self.top_p, self.seed = model, tokenizer, temperature, top_p, seed

    def replies(self, sequences: list[list[int]], max_new_tokens: int, stop_at_json: bool) -> list[list[int]]:
        import torch
        from transformers import StoppingCriteriaList

        from helpers.agent.generation import StopAtJsonEnd

        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        longest = max(len(s) for s in sequences)
        device = next(self.model.parameters()).device
        ids = torch.tensor([[pad] * (longest - len(s)) + list(s) for s in sequences], device=device)
        mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in sequences], device=device)
        stopping = StoppingCriteriaList([StopAtJsonEnd(self.tokenizer, longest)]) if stop_at_json else None
        torch.manual_seed(self.seed)
        self.seed += 1
        sampled = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} \
            if self.temperature > 0 else {"do_sample": False}
        with torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      stopping_criteria=stopping, pad_token_id=pad, eos_token_id=eos, **sampled)
        replies = []
        for row in out[:, longest:].tolist():
            row = row[:row.index(eos) + 1] if eos in row else row
            while row and row[-1] == pad and pad != eos:  # a row that ended before the others
                row.pop()
            replies.append(row)
        return replies


class VLLMSampler:
    """Replies sampled by the trainer's vLLM engine (GPU profiles; not run here), through TRL's generation helper.

    TRL syncs the training weights into vLLM before calling the rollout function. Replies end at the
    end-of-turn id (vLLM has no JSON stop here) or at `max_new_tokens`. Every process must make the same
    number of calls when one vLLM engine spans several GPUs (tensor parallelism), which episodes of
    different lengths do not: keep `vllm_tensor_parallel_size: 1` with episode rollouts.
    """

    def __init__(self, trainer):
        self.generation = trainer.vllm_generation

    def replies(self, sequences: list[list[int]], max_new_tokens: int, stop_at_json: bool) -> list[list[int]]:
        saved = self.generation.max_completion_length
        self.generation.max_completion_length = max_new_tokens  # one reply, not the whole trajectory
        try:
            _, completion_ids, _, _ = self.generation.generate(prompts=sequences, images=None, num_generations=1)
        finally:
            self.generation.max_completion_length = saved
        return [list(ids) for ids in completion_ids]


def describe(rollout: Rollout) -> dict:
    """A rollout as a row for a table: the item, the outcome's fields, and the first reply."""
    return {"task": rollout.item.task.instruction if rollout.item.kind == "episode" else rollout.item.case.opening,
            **rollout.outcome.as_dict(), "first_reply": rollout.replies[0] if rollout.replies else ""}


def shuffled(items: Sequence, seed: int) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items
