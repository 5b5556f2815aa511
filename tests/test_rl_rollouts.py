"""Multi-turn rollouts without a model: a scripted sampler replays replies, the real rollout code plays them.

Checked here: a rollout is the chat layout the agent trains on, token for token; `env_mask` covers the
completion exactly and marks only the model's replies; a trajectory ends on the end-of-turn token; the
outcome is graded from the world; every known reward hack scores below an honest episode; chats can ask;
groups that teach nothing are replaced.
"""
import json
import re
from types import SimpleNamespace

import pytest

from helpers.agent.chat_protocol import chat_action, chat_question
from helpers.agent.expert import ExpertPolicy
from helpers.agent.prompts import PromptFormat, episode_chat, format_completion
from helpers.agent.turns import TurnTokens
from helpers.data.episodes import episode_records
from helpers.harness.episode import run_episode
from helpers.rl.grpo import EpisodeRolloutFunction
from helpers.rl.pool import RolloutItem, RolloutPool, chat_items, episode_items, item_family, prompt_key
from helpers.rl.rewards import OUTCOME_REWARDS, RewardWeights, total_reward
from helpers.rl.rollouts import RolloutSettings, play
from helpers.tasks import build_split
from helpers.training.models.templates import use_training_template
from helpers.training.models.tiny import stdlib_corpus, train_tokenizer

FORMAT = PromptFormat("episode", observation_chars=300)
SETTINGS = RolloutSettings(max_steps=6, observation_chars=300, workers=4)


@pytest.fixture(scope="module")
def task():
    return next(t for t in build_split("train", 1) if t.scenario == "send_with_note")


@pytest.fixture(scope="module")
def expert_replies(task):
    episode = run_episode(task, ExpertPolicy())
    assert episode.result.success
    return [format_completion(s.thought, s.action) for s in episode.steps]


@pytest.fixture(scope="module")
def tokenizer(task, expert_replies):
    episode = run_episode(task, ExpertPolicy())
    texts = [m["content"] for r in episode_records([episode], "train", FORMAT) for m in r["messages"]]
    tokenizer = train_tokenizer(stdlib_corpus(100_000) + texts, vocab_size=600)
    use_training_template(tokenizer)
    return tokenizer


def item_for(task) -> RolloutItem:
    messages = tuple(episode_chat(task.instruction, [], FORMAT))
    return RolloutItem(prompt_key(messages), "episode", task, messages)


class ScriptedSampler:
    """Replies from scripts: a rollout's first reply picks a script (in turn among its item's scripts), later
    replies follow it. Replies end with the end-of-turn token, as a trained model ends them."""

    def __init__(self, tokenizer, scripts: dict[str, list[list[str]]], items: list[RolloutItem]):
        self.tokenizer, self.scripts = tokenizer, scripts
        self.turns = TurnTokens(tokenizer)
        self.openings = {item.key: self.turns.opening(item.prompt) for item in items}
        self.served: dict[str, int] = {}

    def replies(self, sequences, max_new_tokens, stop_at_json):
        return [self._reply(sequence) for sequence in sequences]

    def _reply(self, sequence):
        key = next(k for k, ids in self.openings.items() if sequence[:len(ids)] == ids)
        completion = sequence[len(self.openings[key]):]
        eos = self.turns.end_of_turn
        replies_so_far = completion.count(eos) // 2
        scripts = self.scripts[key]
        if replies_so_far == 0:
            script = scripts[self.served.get(key, 0) % len(scripts)]
            self.served[key] = self.served.get(key, 0) + 1
        else:
            first = self.tokenizer.decode(completion[:completion.index(eos)], skip_special_tokens=True)
            script = next(s for s in scripts if s[0] == first)
        text = script[min(replies_so_far, len(script) - 1)]
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]


def play_script(tokenizer, task, script):
    item = item_for(task)
    sampler = ScriptedSampler(tokenizer, {item.key: [script]}, [item])
    return play([item], sampler, tokenizer, SETTINGS)[0]


def test_an_honest_rollout_is_the_training_chat_token_for_token(tokenizer, task, expert_replies):
    rollout = play_script(tokenizer, task, expert_replies)
    episode = run_episode(task, ExpertPolicy())
    chat = episode_chat(task.instruction, episode.steps, FORMAT, final_reply=True)
    rendered = tokenizer.apply_chat_template(chat, tokenize=False)
    # the whole episode as SFT trains on it, but for the newline the template puts after the last end-of-turn
    assert tokenizer(rendered, add_special_tokens=False)["input_ids"] == \
        rollout.prompt_ids + rollout.completion_ids + tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert rollout.outcome.success and rollout.outcome.completed
    assert rollout.outcome.steps_api == len(expert_replies) and rollout.outcome.steps_failed == 0


def test_env_mask_covers_the_completion_and_marks_only_the_replies(tokenizer, task, expert_replies):
    rollout = play_script(tokenizer, task, expert_replies)
    assert len(rollout.env_mask) == len(rollout.completion_ids)
    trained = [t for t, m in zip(rollout.completion_ids, rollout.env_mask) if m]
    eos = tokenizer.eos_token_id
    expected = [t for reply in expert_replies for t in tokenizer(reply, add_special_tokens=False)["input_ids"] + [eos]]
    assert trained == expected
    assert rollout.completion_ids[-1] == eos and rollout.env_mask[-1] == 1  # it ends on the model's end of turn


def test_a_reply_cut_short_is_closed_by_an_end_of_turn_outside_the_loss(tokenizer, task):
    item = item_for(task)

    class Rambling:
        def replies(self, sequences, max_new_tokens, stop_at_json):
            return [tokenizer("I think", add_special_tokens=False)["input_ids"] for _ in sequences]

    rollout = play([item], Rambling(), tokenizer, SETTINGS)[0]
    assert rollout.completion_ids[-1] == tokenizer.eos_token_id and rollout.env_mask[-1] == 0
    assert rollout.outcome.steps_failed == 3 and rollout.outcome.ended.startswith("3 replies in a row")


HACKS = {
    "prints a fake success": ['{"thought": "done", "action": "print(\'Execution successful.\')"}'],
    "completes at once": ['{"thought": "done", "action": "apis.supervisor.complete_task()"}'],
    "calls APIs in a loop": ['{"thought": "look", "action": "print(apis.api_docs.show_app_descriptions())"}'],
    "writes an empty action": ['{"thought": "hmm", "action": ""}'],
    "does not reply in JSON": ["Sure! I will send the money right away."],
}


@pytest.mark.parametrize("hack", sorted(HACKS))
def test_every_known_hack_scores_below_an_honest_episode(tokenizer, task, expert_replies, hack):
    honest = play_script(tokenizer, task, expert_replies).outcome
    cheat = play_script(tokenizer, task, HACKS[hack]).outcome
    assert not cheat.success
    weights = RewardWeights()
    assert total_reward([cheat], weights)[0] < total_reward([honest], weights)[0]
    if hack == "calls APIs in a loop":
        assert cheat.steps_api == SETTINGS.max_steps  # it ran to the step limit, every step a working call


def test_crashing_the_payment_step_scores_below_a_wrong_payment_that_runs(tokenizer, task, expert_replies):
    """The hack a GRPO run found at collateral weight 2: a payment step that fails on purpose cost one step
    (-0.25), a wrong payment the collateral penalty (-2), so the policy learned to crash. Failing code must
    never pay better than code that runs."""
    pay = next(i for i, r in enumerate(expert_replies) if "send_money(" in r)
    wrong = list(expert_replies)
    wrong[pay] = re.sub(r"amount=[0-9.]+", "amount=1", expert_replies[pay])
    crash = list(expert_replies)
    crash[pay] = expert_replies[pay].replace("apis.wallet.send_money(", "apis.wallet.send_mony(")
    assert wrong[pay] != expert_replies[pay] and crash[pay] != expert_replies[pay]
    honest, wrong, crash = (play_script(tokenizer, task, s).outcome for s in (expert_replies, wrong, crash))
    assert wrong.collateral and not wrong.success and wrong.steps_failed == 0  # it paid, the wrong amount
    assert crash.steps_failed == 1 and not crash.collateral and not crash.success
    scores = total_reward([honest, wrong, crash], RewardWeights())
    assert scores[2] < scores[1] < scores[0]


def test_each_reward_returns_one_float_per_rollout(tokenizer, task, expert_replies):
    outcomes = [play_script(tokenizer, task, s).outcome.as_dict() for s in (expert_replies, HACKS["completes at once"])]
    for reward in OUTCOME_REWARDS:
        values = reward(completions=["ignored"] * 2, outcome=outcomes)
        assert len(values) == 2 and all(isinstance(v, float) for v in values)


@pytest.fixture(scope="module")
def chat():
    return next(item for item in chat_items(12, seed=0) if "note" in item.case.missing)


def test_a_chat_that_asks_for_the_missing_detail_succeeds_and_one_that_invents_it_fails(tokenizer, chat):
    goal = chat.case.goal
    question = chat_question("note", goal.intent, {"recipient_text": goal.recipient_text, "amount": goal.amount})
    act = format_completion(*chat_action(goal))
    invented = format_completion(*chat_action(type(goal)(**{**vars(goal), "note": "stuff"})))
    sampler = ScriptedSampler(tokenizer, {chat.key: [[question, act], [invented]]}, [chat])
    asking, inventing = play([chat, chat], sampler, tokenizer, SETTINGS)
    assert asking.outcome.asked and asking.outcome.success and asking.outcome.turns == 2
    assert not inventing.outcome.asked and not inventing.outcome.success and inventing.outcome.completed
    weights = RewardWeights()
    assert total_reward([asking.outcome], weights)[0] > total_reward([inventing.outcome], weights)[0]
    # the user's answer is in the sequence but not trained on: only the two replies are
    eos = tokenizer.eos_token_id
    trained = [t for t, m in zip(asking.completion_ids, asking.env_mask) if m]
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert trained == ids(question) + [eos] + ids(act) + [eos]


def test_a_chat_that_degenerates_scores_below_one_that_keeps_asking(tokenizer, chat):
    goal = chat.case.goal
    question = chat_question("note", goal.intent, {"recipient_text": goal.recipient_text, "amount": goal.amount})
    act = format_completion(*chat_action(goal))
    broken = '{"thought": "Person: Ann. Amount: $5.", "action": "Person: Ann.", "action": "Person: Ann.", "act'
    again = chat_question("amount", goal.intent, {"recipient_text": goal.recipient_text, "amount": goal.amount})
    turns = SETTINGS.chat_max_turns
    sampler = ScriptedSampler(tokenizer, {chat.key: [[question, act], [again] * turns, [broken] * turns]}, [chat])
    honest, asking, degenerate = play([chat] * 3, sampler, tokenizer, SETTINGS)
    assert honest.outcome.success and asking.outcome.ended == degenerate.outcome.ended == "max_turns"
    assert asking.outcome.steps_failed == 0 and degenerate.outcome.steps_failed == turns  # a question is no failure
    scores = total_reward([honest.outcome, asking.outcome, degenerate.outcome], RewardWeights())
    assert scores[0] > scores[1] > scores[2]


def test_a_needless_question_costs_only_when_its_weight_is_set(tokenizer):
    complete = next(item for item in chat_items(24, seed=0) if not item.case.missing)
    goal = complete.case.goal
    question = chat_question("note", goal.intent, {"recipient_text": goal.recipient_text, "amount": goal.amount})
    act = format_completion(*chat_action(goal))
    sampler = ScriptedSampler(tokenizer, {complete.key: [[question, act], [act]]}, [complete])
    asking, direct = play([complete, complete], sampler, tokenizer, SETTINGS)
    assert asking.outcome.asked and asking.outcome.missing == 0 and asking.outcome.success and direct.outcome.success
    outcomes = [asking.outcome, direct.outcome]
    assert total_reward(outcomes, RewardWeights()) == total_reward([direct.outcome] * 2, RewardWeights())
    penalised = total_reward(outcomes, RewardWeights(needless_question=0.5))
    assert penalised[1] - penalised[0] == pytest.approx(0.5)
    logged = {}
    OUTCOME_REWARDS[0](outcome=[o.as_dict() for o in outcomes], log_metric=logged.__setitem__)
    assert logged["chat/asked_when_nothing_missing"] == 0.5


def test_the_logged_chat_share_is_the_share_of_chat_rollouts_played(tokenizer, task, expert_replies, chat):
    episode = item_for(task)
    act = format_completion(*chat_action(chat.case.goal))
    sampler = ScriptedSampler(tokenizer, {episode.key: [expert_replies], chat.key: [[act]]}, [episode, chat])
    function = EpisodeRolloutFunction(RolloutPool([episode, chat], seed=0), tokenizer, SETTINGS)
    function.sampler = lambda trainer: sampler
    trainer = SimpleNamespace(num_generations=2, accelerator=SimpleNamespace(num_processes=1))
    output = function([chat.prompt] * 2 + [episode.prompt] * 4, trainer)
    assert [o["kind"] for o in output["outcome"]] == ["chat"] * 2 + ["episode"] * 4
    assert function.history[-1]["sampled_chat_share"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("spares, rounds", [(0, 2), (2, 0)])  # replaced in later passes, or by spares of one pass
def test_groups_whose_rewards_all_agree_are_replaced_by_fresh_ones(tokenizer, task, expert_replies, spares, rounds):
    stuck = item_for(task)
    fresh = episode_items(2, seed=5, prompt_format=FORMAT)
    honest = {it.key: [format_completion(s.thought, s.action) for s in run_episode(it.task, ExpertPolicy()).steps]
              for it in fresh}
    scripts = {stuck.key: [HACKS["completes at once"]],  # every rollout the same: a group with no gradient
               **{key: [replies, HACKS["completes at once"]] for key, replies in honest.items()}}  # mixed
    pool = RolloutPool([stuck, *fresh], seed=0)
    function = EpisodeRolloutFunction(pool, tokenizer, SETTINGS, resample_rounds=rounds, oversample_groups=spares)
    sampler = ScriptedSampler(tokenizer, scripts, [stuck, *fresh])
    function.sampler = lambda trainer: sampler
    trainer = SimpleNamespace(num_generations=2, accelerator=SimpleNamespace(num_processes=1))
    output = function([stuck.prompt] * 2, trainer)
    stats = function.history[-1]
    assert stats["uniform_share_before"] == 1.0 and stats["uniform_share_after"] == 0.0
    assert stats["sampled_chat_share"] == 0.0  # the batch as played held tasks only
    record = function.record.table()  # every group judged is on record, as split or all alike
    mixed, alike = (sum(counts[i] for counts in record.values()) for i in (0, 1))
    assert record[item_family(stuck)][1] >= 1  # the stuck group
    assert mixed == (round(stats["spare_split_share"] * spares) if spares else stats["replaced_groups"])
    assert mixed + alike >= 1 + spares
    assert {o["task_id"] for o in output["outcome"]} <= {it.task.id for it in fresh}
    assert [len(m) for m in output["env_mask"]] == [len(c) for c in output["completion_ids"]]
    assert output["logprobs"] is None and json.dumps(output["outcome"])  # plain data for the reward functions


def test_the_vllm_sampler_asks_trls_engine_for_one_reply_per_sequence():
    from helpers.rl.rollouts import VLLMSampler

    class Engine:  # TRL's VLLMGeneration, as the trainer holds it: generate() reads max_completion_length
        max_completion_length = 4096

        def generate(self, prompts, images, num_generations):
            self.seen = (prompts, images, num_generations, self.max_completion_length)
            return prompts, [[7, 8, 2] for _ in prompts], None, None

    engine = Engine()
    sampler = VLLMSampler(SimpleNamespace(vllm_generation=engine))
    assert sampler.replies([[1, 2], [3]], max_new_tokens=192, stop_at_json=True) == [[7, 8, 2], [7, 8, 2]]
    assert engine.seen == ([[1, 2], [3]], None, 1, 192)
    assert engine.max_completion_length == 4096  # restored: the trainer's own value stays


def test_the_generate_sampler_writes_the_replies_of_the_decoder(tokenizer, task):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed

    from helpers.agent.decoding import Decoder
    from helpers.rl.rollouts import DecoderSampler, GenerateSampler

    set_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    turns = TurnTokens(tokenizer)
    sequences = [turns.opening(item_for(task).prompt), turns.opening([{"role": "user", "content": "hi"}])]
    plain = GenerateSampler(model.eval(), tokenizer, temperature=0.0).replies(sequences, 10, stop_at_json=False)
    ours = DecoderSampler(Decoder(model, [tokenizer.eos_token_id]), temperature=0.0).replies(sequences, 10, False)
    assert plain == ours and all(0 < len(r) <= 10 for r in plain)


def test_rollout_settings_read_a_profiles_values_and_keep_the_defaults_it_lacks():
    from helpers.course.profiles import load_profile

    params = {"max_steps": 3, "max_new_tokens": 11, "chat_max_new_tokens": 22, "max_completion_length": 333,
              "observation_chars": 44, "learning_rate": 1e-5}  # every value off its default; one key not read
    assert RolloutSettings.from_profile(params) == RolloutSettings(
        max_steps=3, reply_tokens=11, chat_reply_tokens=22, max_completion_tokens=333, observation_chars=44)
    profile = load_profile("cpu-smollm2")
    assert RolloutSettings.from_profile(profile).max_steps == profile["max_steps"]
    assert RolloutSettings.from_profile({}) == RolloutSettings()
