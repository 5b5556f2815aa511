"""The SFT data of a profile, as 🤗 datasets: episode chats (with optional simulated-user conversations) for the
`episode` prompt style, step records (prompt/completion) for the others."""
from __future__ import annotations

from pathlib import Path

from datasets import Dataset, DatasetDict

from helpers.data.files import read_jsonl


def sft_datasets(datasets_dir: str | Path, prompt_style: str, conversations: int = 0,
                 dev_records: int = 0, episodes: int = 0, asking: int | None = None) -> DatasetDict:
    """`train` and `dev` splits for SFTTrainer.

    Episode style: one `messages` chat per expert episode, trained with loss on assistant turns, plus the
    first `conversations` chats with the simulated user (the same layout, so one dataset holds both); with
    `asking` set, `asking` of them are chats that lack a detail (the agent asks for it) and the rest are complete
    (`pick_conversations`).
    Other styles: the step records' `prompt`/`completion`. `dev_records` > 0 keeps that many dev records
    (the dev loss is computed every epoch; on a CPU a full pass can cost minutes). `episodes` > 0 trains on
    that many expert episodes, spread over the scenarios (`spread_over_scenarios`).
    """
    datasets_dir = Path(datasets_dir)
    if prompt_style == "episode":
        expert = spread_over_scenarios(read_jsonl(datasets_dir / "episodes_train.jsonl"), episodes)
        train = [{"messages": r["messages"]} for r in expert]
        if conversations:
            chats = pick_conversations(read_jsonl(datasets_dir / "conversations_train.jsonl"), conversations, asking)
            train += [{"messages": r["messages"]} for r in chats]
        dev = [{"messages": r["messages"]} for r in read_jsonl(datasets_dir / "episodes_dev.jsonl")]
    else:
        if conversations or episodes:
            raise ValueError("Conversations and an episode count apply only to episode training data: set "
                             "sft_conversations and sft_episodes (lora_conversations and lora_episodes in 03) to 0, "
                             "or prompt_style to 'episode'.")
        train = [{"prompt": r["prompt"], "completion": r["completion"]}
                 for r in read_jsonl(datasets_dir / "stepwise_train.jsonl")]
        dev = [{"prompt": r["prompt"], "completion": r["completion"]}
               for r in read_jsonl(datasets_dir / "stepwise_dev.jsonl")]
    if dev_records:
        dev = dev[:dev_records]
    return DatasetDict(train=Dataset.from_list(train), dev=Dataset.from_list(dev))


def pick_conversations(chats: list[dict], count: int, asking: int | None = None) -> list[dict]:
    """`count` chats in generation order; with `asking`, exactly that many of them lack a detail, taken in turn
    from each kind of gap (the note missing, the person missing, the person and the note, ...).

    In the generated chats about one in three lacks a detail, so sixteen chats hold about four questions: too few
    for the model to ask when a detail is missing (docs/results-cpu-smollm2.md). Setting the mix keeps the
    number of chats, and so the training time, where it is. Taking the gaps in turn matters: with the first twelve
    as generated, four asked for the note, and the trained model asked "Who should I send $188 to?" when the note
    was missing.
    """
    if asking is None:
        return chats[:count]
    if not 0 <= asking <= count:
        raise ValueError(f"sft_asking_conversations is {asking}: set it between 0 and the number of chats ({count}).")
    by_gap: dict[tuple, list[int]] = {}  # in order of first appearance, each list in generation order
    for i, chat in enumerate(chats):
        if chat.get("missing"):
            by_gap.setdefault(tuple(chat["missing"]), []).append(i)
    complete = [i for i, chat in enumerate(chats) if not chat.get("missing")]
    lacking = sum(len(group) for group in by_gap.values())
    if lacking < asking or len(complete) < count - asking:
        raise ValueError(f"01 generated {lacking} chats that lack a detail and {len(complete)} complete ones; "
                         f"{asking} and {count - asking} were asked for: raise conversation_count in 01 or lower "
                         "the chat counts.")
    taken: list[int] = []
    for turn in range(max((len(group) for group in by_gap.values()), default=0)):
        taken += [group[turn] for group in by_gap.values() if turn < len(group)]
    return [chats[i] for i in sorted(taken[:asking] + complete[:count - asking])]


def record_texts(dataset: Dataset) -> list[str]:
    """Every message's text, to shape a tokenizer built for this data."""
    if "messages" in dataset.column_names:
        return [m["content"] for chat in dataset["messages"] for m in chat]
    return [m["content"] for column in ("prompt", "completion") for chat in dataset[column] for m in chat]


def longest_record(tokenizer, dataset: Dataset) -> int:
    """Tokens of the longest record as the chat template renders it: TRL cuts records at max_length silently."""
    chats = dataset["messages"] if "messages" in dataset.column_names else [
        p + c for p, c in zip(dataset["prompt"], dataset["completion"])]
    return max(len(tokenizer(tokenizer.apply_chat_template(chat, tokenize=False), add_special_tokens=False)["input_ids"])
               for chat in chats)


def spread_over_scenarios(records: list[dict], limit: int) -> list[dict]:
    """At most `limit` episode records, one variant of every scenario before a second one of any, and the
    scenario types taken in turn, so that a budget smaller than the scenarios still covers every type evenly.

    A scenario's three variants share one phrasing; with a fixed budget of episodes, taking first one
    variant of every scenario gives the model the most phrasings, people and amounts to learn from.
    """
    if not limit or limit >= len(records):
        return list(records)
    scenarios: dict[str, dict[str, int]] = {}  # type -> scenario id -> its rank within the type
    rank = []
    for record in records:
        of_type = scenarios.setdefault(record.get("scenario", ""), {})
        rank.append(of_type.setdefault(record["scenario_id"], len(of_type)))
    type_order = {name: index for index, name in enumerate(scenarios)}

    def key(i: int) -> tuple:
        variant = int(records[i]["task_id"].rsplit("_", 1)[1])
        return variant, rank[i], type_order[records[i].get("scenario", "")], i
    order = sorted(range(len(records)), key=key)
    return [records[i] for i in sorted(order[:limit])]
