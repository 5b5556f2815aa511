"""Episode records: one chat per expert episode, the same layout at inference, and loss masks that match.

The central check: trained with loss on assistant turns only, an episode record's loss on its turn i
equals the loss of the step record that ends at turn i (same template, same model), so one episode
record supervises exactly what its step records do, in one sequence.
"""
import pytest
import torch
from datasets import Dataset
from transformers import Qwen2Config, Qwen2ForCausalLM, set_seed
from trl import SFTConfig

from helpers.agent.expert import ExpertPolicy
from helpers.agent.generation import ChatGenerator, HFChatGenerator, generate_replies, json_object_closed, render
from helpers.agent.prompts import EPISODE_OUTPUT, PromptFormat, build_prompt, instruction_of
from helpers.data.episodes import episode_records
from helpers.data.stepwise import stepwise_records
from helpers.harness.episode import Step, run_episode
from helpers.tasks import build_split
from helpers.training.models.templates import (
    SMOLLM2_DEFAULT_SYSTEM, NoTrainingTemplate, chatml_template, use_training_template,
)
from helpers.training.models.tiny import stdlib_corpus, train_tokenizer
from helpers.training.trainers import ScoredLogitsSFTTrainer

EPISODE = PromptFormat("episode", observation_chars=120)


@pytest.fixture(scope="module")
def episodes():
    tasks = build_split("train", 1)
    chosen = [next(t for t in tasks if t.scenario == kind) for kind in ("send_with_note", "answer_balance")]
    return [run_episode(t, ExpertPolicy()) for t in chosen]


@pytest.fixture(scope="module")
def tokenizer(episodes):
    texts = [m["content"] for r in episode_records(episodes, "train", EPISODE) for m in r["messages"]]
    tokenizer = train_tokenizer(stdlib_corpus(200_000) + texts, vocab_size=700)
    use_training_template(tokenizer)
    return tokenizer


def tiny_model(tokenizer, seed=0):
    set_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=64, max_position_embeddings=4096,
                         tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    return Qwen2ForCausalLM(config).eval()


def test_an_episode_record_is_the_chat_the_agent_sees_at_each_step(episodes):
    episode = episodes[0]
    record = next(episode_records([episode], "train", EPISODE))
    messages = record["messages"]
    assert [m["role"] for m in messages[:2]] == ["system", "user"]
    assert messages[-1]["role"] == "assistant" and record["steps"] == len(episode.steps)
    assert sum(m["role"] == "assistant" for m in messages) == len(episode.steps)
    for i in range(len(episode.steps)):
        # the agent's prompt before step i is the record up to its i-th assistant turn
        assert build_prompt(episode.task.instruction, episode.steps[:i], EPISODE) == messages[:2 + 2 * i]
    outputs = [m["content"] for m in messages if m["role"] == "user"][1:]
    assert all(len(o) <= len(EPISODE_OUTPUT.format(observation="")) + 120 + 40 for o in outputs)
    assert instruction_of(build_prompt(episode.task.instruction, episode.steps[:3], EPISODE)) == episode.task.instruction


def test_a_reply_that_could_not_be_parsed_is_shown_as_written(episodes):
    task = episodes[0].task
    steps = [Step("", "I am not sure what to do.", "Your reply could not be used", ok=False, error_kind="parse_error")]
    assert build_prompt(task.instruction, steps, EPISODE)[2]["content"] == "I am not sure what to do."


def test_episode_records_need_the_episode_style(episodes):
    with pytest.raises(ValueError, match="episode"):
        list(episode_records(episodes, "train", PromptFormat("compact")))


def test_the_marked_templates_render_what_the_originals_render(tokenizer):
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
            {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
    for default_system in (None, SMOLLM2_DEFAULT_SYSTEM):
        for messages in (chat, chat[1:]):
            for prompt in (False, True):
                plain = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                                      chat_template=chatml_template(default_system, False))
                marked = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                                       chat_template=chatml_template(default_system))
                assert plain == marked


def test_smollm2s_template_is_recognised_by_what_it_renders(tokenizer):
    # SmolLM2's GGUF writes the same ChatML with other spacing; recognised by rendering, not by its source text
    other = tokenizer.__class__(tokenizer_object=tokenizer.backend_tokenizer, eos_token="<|im_end|>",
                                pad_token="<|endoftext|>")
    other.chat_template = chatml_template(SMOLLM2_DEFAULT_SYSTEM, False).replace("{{ '<|im_start|>' +", "{{'<|im_start|>' +")
    assert use_training_template(other) == "ChatML with SmolLM2's default system turn"
    assert "{% generation %}" in other.chat_template
    other.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(NoTrainingTemplate, match="generation"):
        use_training_template(other)


def _token_losses(model, tokenizer, dataset, config) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(labels, per-token loss) of each example, tokenized and masked by TRL exactly as in training."""
    trainer = ScoredLogitsSFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer)
    rows = []
    for example in trainer.train_dataset:
        batch = trainer.data_collator([example])
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"]).logits[0, :-1]
        labels = batch["labels"][0, 1:]
        loss = torch.nn.functional.cross_entropy(logits, labels.clamp(min=0), reduction="none")
        rows.append((labels, loss))
    return rows


def _spans(labels: torch.Tensor) -> list[slice]:
    """The runs of positions that carry a label (-100 elsewhere)."""
    spans, start = [], None
    for i, keep in enumerate((labels != -100).tolist() + [False]):
        if keep and start is None:
            start = i
        elif not keep and start is not None:
            spans.append(slice(start, i))
            start = None
    return spans


def test_an_episode_records_loss_on_each_turn_equals_its_step_records_loss(episodes, tokenizer, tmp_path):
    episode = episodes[0]
    record = next(episode_records([episode], "train", EPISODE))
    steps = list(stepwise_records([episode], "train", EPISODE))
    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_length=4096,
                  activation_checkpointing=False, dataloader_pin_memory=False)
    model = tiny_model(tokenizer)
    (labels, loss), = _token_losses(model, tokenizer, Dataset.from_list([{"messages": record["messages"]}]),
                                    SFTConfig(assistant_only_loss=True, **common))
    turns = _spans(labels)
    assert len(turns) == len(steps) == len(episode.steps)
    step_rows = _token_losses(model, tokenizer, Dataset.from_list([{"prompt": s["prompt"], "completion": s["completion"]}
                                                                   for s in steps]),
                              SFTConfig(completion_only_loss=True, **common))
    for turn, (step_labels, step_loss) in zip(turns, step_rows):
        completion, = _spans(step_labels)
        assert torch.equal(labels[turn], step_labels[completion])  # the same target tokens ...
        assert torch.allclose(loss[turn], step_loss[completion], atol=1e-5)  # ... with the same loss
    assert labels[turns[-1]][-2].item() == tokenizer.convert_tokens_to_ids("<|im_end|>")  # it learns to stop


@pytest.mark.parametrize("text, closed", [
    ('{"thought": "a", "action": "x = {\\"k\\": 1}"}', True),
    ('{"thought": "it\'s", "action": "print(\'}\')"} and more', True),
    ('```json\n{"thought": "a", "action": "b"', False),
    ("no object here", False),
    ("{'thought': 'a', 'action': '{}'}", True),
])
def test_the_json_stop_waits_for_the_whole_object(text, closed):
    assert json_object_closed(text) is closed


@pytest.mark.parametrize("generator_class", [ChatGenerator, HFChatGenerator])
def test_cached_generation_gives_the_replies_of_plain_generation(episodes, tokenizer, generator_class):
    model = tiny_model(tokenizer, seed=1)
    generator = generator_class(model, tokenizer, max_new_tokens=12, batch_size=4, stop_at_json=False)
    for turn in range(3):
        chats = [build_prompt(e.task.instruction, e.steps[:turn], EPISODE) for e in episodes]
        assert generator.generate(chats) == generate_replies(model, tokenizer, chats, max_new_tokens=12,
                                                             stop_at_json=False)
    # the later turns read only their new tokens
    assert generator.stats["tokens_reused"] > generator.stats["tokens_read"] / 2


def test_replies_that_end_early_leave_the_batch_and_the_others_read_as_in_one_pass(episodes, tokenizer):
    import copy
    from collections import Counter

    model = tiny_model(tokenizer, seed=3)
    with torch.no_grad():  # large random weights: replies that differ from one context to another
        for parameter in model.parameters():
            parameter.normal_(0, 1.0)
    chats = [build_prompt(e.task.instruction, e.steps[:turn], EPISODE) for e in episodes for turn in range(4)]
    plain = generate_replies(model, tokenizer, chats, max_new_tokens=12, stop_at_json=False)
    # a token the model writes in some replies but not all becomes the end of turn, so that rows end at
    # different rounds
    ids = []
    for chat in chats:
        prompt = tokenizer(render(tokenizer, chat), return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids.append(model.generate(prompt, max_new_tokens=12, do_sample=False)[0, prompt.shape[1]:].tolist())
    counts = Counter(token for row in ids for token in set(row))
    stop = next(token for token, n in counts.most_common() if 1 < n < len(ids) - 1)
    ending = copy.deepcopy(tokenizer)
    ending.eos_token = ending.convert_ids_to_tokens(stop)
    expected = generate_replies(model, ending, chats, max_new_tokens=12, stop_at_json=False)
    generator = HFChatGenerator(model, ending, max_new_tokens=12, batch_size=len(chats), stop_at_json=False,
                                round_tokens=3)
    rounds = []
    real = generator._ended
    generator._ended = lambda row, start: rounds.append(1) or real(row, start)
    assert generator.generate(chats) == expected
    assert expected != plain and len(rounds) > len(chats)  # rows ended early, and several rounds were decoded
    # the project's decoder: finished rows leave its block too, and the replies are the same
    decoder_generator = ChatGenerator(model, ending, max_new_tokens=12, batch_size=len(chats), stop_at_json=False)
    assert decoder_generator.generate(chats) == expected
    assert decoder_generator.stats["compactions"] > 0


def test_a_chat_backend_keeps_the_model_and_takes_its_own_reply_length(episodes, tokenizer):
    from helpers.agent.backends import TransformersBackend

    model = tiny_model(tokenizer, seed=2)  # untrained: its replies run to their length limit
    step_backend = TransformersBackend(model, tokenizer, "tiny", max_new_tokens=4, batch_size=2)
    chat_backend = step_backend.with_max_new_tokens(16)
    assert chat_backend.model is model and chat_backend.name == "tiny" and step_backend.max_new_tokens == 4
    chats = [build_prompt(e.task.instruction, [], EPISODE) for e in episodes]
    step_backend.generate(chats)
    chat_backend.generate(chats)
    step_tokens = step_backend.generator.stats["tokens_written"]
    chat_tokens = chat_backend.generator.stats["tokens_written"]
    assert step_tokens <= 4 * len(chats) < chat_tokens <= 16 * len(chats)


def test_an_episode_budget_takes_one_variant_of_every_scenario_first(tmp_path):
    from helpers.data.files import write_jsonl
    from helpers.data.training_sets import sft_datasets, spread_over_scenarios

    tasks = [t for t in build_split("train", 1) if t.scenario in ("send_with_note", "answer_balance")]
    records = list(episode_records([run_episode(t, ExpertPolicy()) for t in tasks], "train", EPISODE))
    scenarios = {r["scenario_id"] for r in records}
    assert len(records) > len(scenarios)  # several variants per scenario, so the budget has a choice
    chosen = spread_over_scenarios(records, len(scenarios))
    assert {r["scenario_id"] for r in chosen} == scenarios
    assert [r["task_id"] for r in chosen] == [r["task_id"] for r in records if r in chosen]  # file order kept
    assert spread_over_scenarios(records, 0) == records

    # a budget smaller than the scenarios takes the types in turn: here two scenarios of each of the two types
    two_each = [t for t in build_split("train", 3) if t.scenario in ("send_with_note", "answer_balance")]
    many = list(episode_records([run_episode(t, ExpertPolicy()) for t in two_each], "train", EPISODE))
    picked = spread_over_scenarios(many, 4)
    assert sorted(r["scenario"] for r in picked) == ["answer_balance"] * 2 + ["send_with_note"] * 2
    assert len({r["scenario_id"] for r in picked}) == 4

    write_jsonl(records, tmp_path / "episodes_train.jsonl", generator="test", profile="test", seed=0)
    write_jsonl(records[:2], tmp_path / "episodes_dev.jsonl", generator="test", profile="test", seed=0)
    data = sft_datasets(tmp_path, "episode", episodes=len(scenarios) + 1)
    assert len(data["train"]) == len(scenarios) + 1
    with pytest.raises(ValueError, match="sft_episodes"):
        sft_datasets(tmp_path, "compact", episodes=3)
