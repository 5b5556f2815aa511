"""GRPO on whole episodes with TRL: the `rollout_func` that plays them, and a trainer that scores only model tokens.

TRL's `GRPOTrainer(rollout_func=f)` calls `f(prompts, trainer)` with each prompt already repeated
`num_generations` times (a group: consecutive prompts) and expects `prompt_ids`, `completion_ids` and
`logprobs` (None: the trainer computes them), plus `env_mask` (1 for the model's tokens, 0 for the world's,
the loss mask) and any per-rollout field, which the reward functions receive as a keyword argument.

Groups whose rollouts all score the same teach nothing (their advantages are all zero). The rollout function
counts them and replaces them with groups of fresh pool items, for up to `resample_rounds` rounds (dynamic
sampling, as in DAPO); the share before and after is logged. Replacing groups changes the batch's mean reward
(a group of four successes gives way to a mixed one), so the learning curve to read is `sampled_reward`: the
batch as the policy first played it.
"""
from __future__ import annotations

import contextlib
import time
from typing import Sequence

import torch
from trl import GRPOTrainer

from helpers.agent.decoding import TokenText
from helpers.agent.turns import TurnTokens
from helpers.rl.pool import GroupRecord, RolloutPool, prompt_key
from helpers.rl.rewards import RewardWeights, total_reward, totals_differ
from helpers.rl.rollouts import Rollout, RolloutSettings, VLLMSampler, local_sampler, play
from helpers.training.trainers import compiled_layers


class EpisodeRolloutFunction:
    """Plays a batch of prompts as whole multi-turn rollouts; the `rollout_func` of TRL's GRPOTrainer."""

    def __init__(self, pool: RolloutPool, tokenizer, settings: RolloutSettings = RolloutSettings(),
                 weights: RewardWeights = RewardWeights(), temperature: float = 1.0, top_p: float = 1.0,
                 resample_rounds: int = 1, seed: int = 0, decode_dtype: torch.dtype | None = None,
                 draft_tokens: int = 4, batch_size: int = 64, oversample_groups: int = 0,
                 spare_candidates: int = 1):
        self.pool, self.tokenizer, self.settings, self.weights = pool, tokenizer, settings, weights
        self.temperature, self.top_p, self.resample_rounds, self.seed = temperature, top_p, resample_rounds, seed
        self.decode_dtype, self.draft_tokens, self.batch_size = decode_dtype, draft_tokens, batch_size
        self.oversample_groups = oversample_groups
        # each spare group is the best of this many pool items, ranked by how often their family's groups split
        self.spare_candidates = spare_candidates
        self.record = GroupRecord(seed)
        self.turns = TurnTokens(tokenizer)
        self.token_text = TokenText(tokenizer)
        self.calls = 0
        self.history: list[dict] = []  # per call: seconds, groups, uniform groups before and after resampling
        self.last_rollouts: list[Rollout] = []

    def sampler(self, trainer):
        if getattr(trainer, "use_vllm", False):
            return VLLMSampler(trainer)
        model = trainer.accelerator.unwrap_model(trainer.model)
        return local_sampler(model, self.tokenizer, self.temperature, self.top_p, seed=self.seed * 100_003 + self.calls,
                             dtype=self.decode_dtype, batch_size=self.batch_size, draft_tokens=self.draft_tokens,
                             token_text=self.token_text)

    def __call__(self, prompts: Sequence, trainer) -> dict:
        started = time.perf_counter()
        group_size = trainer.num_generations
        sampler = self.sampler(trainer)
        items = [self.pool.by_key[prompt_key(prompt)] for prompt in prompts]
        # Groups split across processes cannot be replaced by one process alone.
        alone = trainer.accelerator.num_processes == 1
        # spare groups played in the same pass (a bigger batch costs less than another pass), kept for replacing
        spare_items = [self.pool.draw(rank=self.record.rank, candidates=self.spare_candidates)
                       for _ in range(self.oversample_groups if alone else 0)]
        played = self.play(items + [item for item in spare_items for _ in range(group_size)], sampler)
        rollouts, spare = played[:len(items)], played[len(items):]
        # the batch as sampled, before any group is replaced: the policy's own score on fresh requests
        sampled_reward = sum(total_reward([r.outcome for r in rollouts], self.weights)) / len(rollouts)
        sampled_success = sum(r.outcome.success for r in rollouts) / len(rollouts)
        sampled_chats = sum(r.item.kind == "chat" for r in rollouts) / len(rollouts)  # a mix that moves moves the curve
        groups = [rollouts[i:i + group_size] for i in range(0, len(rollouts), group_size)]
        uniform = [k for k, group in enumerate(groups) if not self._splits(group)]
        initially = len(uniform)
        spare_groups = [spare[i:i + group_size] for i in range(0, len(spare), group_size)]
        spares = [group for group in spare_groups if self._splits(group)]
        split_spares = len(spares)
        replaced = 0
        while uniform and spares:
            groups[uniform.pop(0)] = spares.pop(0)
            replaced += 1
        rounds = self.resample_rounds if alone else 0
        for _ in range(rounds):
            if not uniform:
                break
            fresh = [self.pool.draw(groups[k][0].item.kind, self.record.rank, self.spare_candidates) for k in uniform]
            played = self.play([item for item in fresh for _ in range(group_size)], sampler)
            still = []
            for k, start in zip(uniform, range(0, len(played), group_size)):
                candidate = played[start:start + group_size]
                if self._splits(candidate):
                    groups[k] = candidate
                    replaced += 1
                else:
                    still.append(k)
            uniform = still
        rollouts = [r for group in groups for r in group]
        self.last_rollouts = rollouts
        stats = {"seconds": round(time.perf_counter() - started, 2), "groups": len(groups),
                 "sampled_reward": sampled_reward, "sampled_success": sampled_success, "sampled_chat_share": sampled_chats,
                 "uniform_share_before": initially / len(groups), "uniform_share_after": len(uniform) / len(groups),
                 "replaced_groups": replaced,
                 "spare_split_share": split_spares / len(spare_groups) if spare_groups else 0.0}
        self.history.append(stats)
        self.calls += 1
        return {
            "prompt_ids": [r.prompt_ids for r in rollouts],
            "completion_ids": [r.completion_ids for r in rollouts],
            "logprobs": None,
            "env_mask": [r.env_mask for r in rollouts],
            "outcome": [r.outcome.as_dict() for r in rollouts],
            "rollout_stats": [stats] * len(rollouts),
        }

    def play(self, items, sampler) -> list[Rollout]:
        return play(items, sampler, self.tokenizer, self.settings, self.turns)

    def _splits(self, group: list[Rollout]) -> bool:
        """Whether the group's rewards differ; every group judged goes on its family's record."""
        differs = totals_differ(total_reward([r.outcome for r in group], self.weights))
        self.record.add(group[0].item, differs)
        return differs


def token_logps_and_entropy(logits: torch.Tensor, targets: torch.Tensor, temperature: float,
                            compute_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log p(target) at each scored position [positions, vocab] under the sampling temperature, in fp32, and the
    distribution's entropy (a logged metric: no gradient), as TRL scores them."""
    log_probs = torch.log_softmax(logits.float() / temperature, dim=-1)
    token_logps = log_probs.gather(-1, targets[:, None]).squeeze(-1)
    if not compute_entropy:
        return token_logps, None
    log_probs = log_probs.detach()
    return token_logps, -(log_probs.exp() * log_probs).sum(-1)


class EpisodeGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose log-probabilities go through the LM head only where the loss reads them.

    In a multi-turn rollout about half of the completion is the world's text (code output, the user's
    answers), masked out of the loss; TRL still projects every completion position through the LM head (on
    a CPU, SmolLM2's 49,152-word head is a fifth of the model's arithmetic). Here the hidden states are
    projected only at the model's own tokens; the other positions get log-probability and entropy 0, which
    the loss and every metric ignore through the same mask. Same loss, same gradients
    (`tests/test_rl_grpo.py`). Models it cannot handle this way (PEFT adapters, vision inputs) take TRL's path.

    `compile_layers=True` (the CPU path, as full SFT's trainer) trains with every decoder layer of the policy and
    of the reference model compiled by `torch.compile`, and the log-probabilities and entropy of the scored
    positions compiled into one pass over the [positions, vocabulary] logits instead of several fp32 copies.
    The rollouts read the same weights through the project's decoder, so generation is unchanged.
    """

    _scored_mask: torch.Tensor | None = None

    def __init__(self, *args, compile_layers: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.compile_layers = compile_layers
        self.token_logps_and_entropy = (torch.compile(token_logps_and_entropy, dynamic=True) if compile_layers
                                        else token_logps_and_entropy)

    def train(self, *args, **kwargs):
        if not self.compile_layers:
            return super().train(*args, **kwargs)
        with self.compiled_models():
            return super().train(*args, **kwargs)

    def compiled_models(self) -> contextlib.ExitStack:
        """The policy's decoder layers compiled inside the block, and the reference model's when there is one (with
        beta > 0 its forward runs every step too)."""
        stack = contextlib.ExitStack()
        stack.enter_context(compiled_layers(self.model))
        if self.ref_model is not None:
            stack.enter_context(compiled_layers(self.ref_model))
        return stack

    def _compute_loss(self, model, inputs):
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        self._scored_mask = mask
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._scored_mask = None

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        mask = self._scored_mask
        plain = getattr(self.accelerator.unwrap_model(model), "lm_head", None) is not None
        if (mask is None or compute_aux_loss or any(v is not None for v in multimodal.values()) or not plain
                or mask.shape != (input_ids.shape[0], logits_to_keep)):
            return super()._get_per_token_logps_and_entropies(
                model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
                compute_entropy=compute_entropy, compute_aux_loss=compute_aux_loss, **multimodal)
        # position t predicts token t + 1: the completion token j sits at input position P + j, scored from P + j - 1
        prompt_length = input_ids.shape[1] - logits_to_keep
        scored = torch.zeros_like(input_ids, dtype=torch.bool)
        scored[:, prompt_length - 1:-1] = mask.bool()
        with self.accelerator.autocast():
            logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=scored,
                           use_cache=False).logits
        targets = input_ids[:, prompt_length:][mask.bool()]
        token_logps, entropy = self.token_logps_and_entropy(logits, targets, self.temperature, compute_entropy)
        logps = torch.zeros(mask.shape, dtype=token_logps.dtype, device=token_logps.device)
        logps = logps.masked_scatter(mask.bool(), token_logps)
        entropies = None
        if compute_entropy:
            entropies = torch.zeros_like(logps).masked_scatter(mask.bool(), entropy)
        return logps, entropies, None
