"""Scoring the conversational skill: a model chats with a simulated user, acts once in code, graded on the world."""
from __future__ import annotations

import csv
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from helpers.agent.chat_protocol import CHAT_SYSTEM_PROMPT, chat_action, chat_confirmation, chat_question
from helpers.agent.prompts import ActionParseError, format_completion, parse_action
from helpers.agent.simulated_user import SLOT_QUESTIONS, SimulatedUser, UserGoal, shown_text
from helpers.data.conversations import conversation_world, request_task
from helpers.data.queries import DEFAULT_RECIPIENTS, PaymentQuery, generate_queries, parse_amount
from helpers.harness.episode import Environment
from helpers.metadata import write_json
from helpers.tasks.people import NOTES
from helpers.tasks.schema import Task
from helpers.tasks.worlds import random_amount
from helpers.world.state import Contact, WorldState

if TYPE_CHECKING:  # the backends module imports torch, which the chat loop itself does not need
    from helpers.agent.backends import Backend

GO_AHEAD = "Please go ahead."  # the user's reply to a message that neither asks a detail nor acts
SLOT_ORDER = ("recipient", "amount", "note")  # the order in which the training assistant asks


@dataclass
class ChatCase:
    """One held-out conversation to play: the user's opening, what they really want, and the graded request."""

    case_id: str
    opening: str
    goal: UserGoal
    task: Task
    missing: tuple[str, ...] = ()  # the details the opening leaves out

    @property
    def world(self) -> WorldState:
        return self.task.world


@dataclass
class ChatOutcome:
    case_id: str
    success: bool
    user_turns: int  # the user's messages, the opening included
    assistant_turns: int  # the assistant's replies, the confirmation after acting included
    ended: str  # acted | max_turns | parse_error (the turn limit hit right after a reply that failed to parse)
    missing: tuple[str, ...] = ()
    transcript: list[dict] = field(default_factory=list)
    questions: int = 0  # replies the simulated user answered with a detail it was asked for
    intent: str = ""  # what the user wants done: send_money | request_money


def _goal_for(query: PaymentQuery, world: WorldState, rng: random.Random) -> UserGoal:
    """What the user has in mind, drawn exactly as `build_conversation` draws it for the training data."""
    if query.recipient is None:
        contact = rng.choice(world.contacts)
        recipient = f"{contact.first_name} {contact.last_name}"
        recipient_text = rng.choice((recipient, contact.first_name))
    else:
        recipient, recipient_text = query.recipient, query.recipient_text
    return UserGoal(intent=query.intent, recipient=recipient, recipient_text=recipient_text,
                    amount=query.amount if query.amount is not None else random_amount(rng),
                    note=query.note or rng.choice(NOTES))


def _reference_code_passes(goal: UserGoal, task: Task) -> bool:
    # The training data keeps only conversations whose reference code passes; a held-out case that the
    # reference solution itself fails (a search that finds the wrong person first) would measure nothing.
    with Environment(task) as env:
        return env.execute(chat_action(goal)[1]).ok and env.grade().success


def chat_cases(count: int, seed: int = 1000, missing_rate: float = 0.5, people_per_world: int = 8) -> list[ChatCase]:
    """`count` held-out cases built like `build_conversations` (training uses small seeds); the same for the same seed.

    Openings are distinct, so a chat can be told apart by its opening.
    """
    rng = random.Random(seed)
    cases: list[ChatCase] = []
    openings: set[str] = set()
    attempt = 0
    while len(cases) < count:
        people = rng.sample(list(DEFAULT_RECIPIENTS), people_per_world)
        world = conversation_world(rng, people)
        queries = generate_queries(n=12, seed=rng.randrange(2**31), recipients=people, missing_rate=missing_rate)
        for query in queries:
            attempt += 1
            goal = _goal_for(query, world, rng)
            if query.text in openings:
                continue
            case_id = f"heldout{seed}-{attempt:05d}"
            task = request_task(goal, world, case_id)
            if not _reference_code_passes(goal, task):
                continue
            openings.add(query.text)
            cases.append(ChatCase(case_id, query.text, goal, task, tuple(query.missing)))
            if len(cases) >= count:
                return cases
        if attempt > count * 4 + 100:
            raise RuntimeError(f"only {len(cases)} of {count} held-out cases passed verification")
    return cases


@dataclass
class _OpenChat:
    case: ChatCase
    user: SimulatedUser
    messages: list[dict]
    assistant_turns: int = 0
    questions: int = 0
    success: bool = False
    acted: bool = False

    def outcome(self, ended: str) -> ChatOutcome:
        user_turns = sum(m["role"] == "user" for m in self.messages)
        return ChatOutcome(self.case.case_id, self.success, user_turns, self.assistant_turns, ended,
                           self.case.missing, self.messages, self.questions, self.case.goal.intent)


def _looks_like_action(reply: str) -> bool:
    return "action" in reply and "{" in reply


def _advance(chat: _OpenChat, reply: str, max_turns: int) -> str | None:
    """Take one assistant reply; return why the chat ended, or None while it goes on."""
    chat.assistant_turns += 1
    chat.messages.append({"role": "assistant", "content": reply})
    if chat.acted:  # this was the confirmation after the action's output
        return "acted"
    try:
        action = parse_action(reply)
    except ActionParseError:
        action = None
    if action is not None:
        with Environment(chat.case.task) as env:
            result = env.execute(action.code)
            chat.success = result.ok and env.grade().success
        chat.messages.append({"role": "tool", "content": result.observation})
        chat.acted = True
        return None
    if chat.assistant_turns >= max_turns:
        return "parse_error" if _looks_like_action(reply) else "max_turns"
    answer, asked = user_turn(chat.user, reply)
    chat.questions += asked
    chat.messages.append({"role": "user", "content": answer})
    return None


def simulated_user(case: ChatCase) -> SimulatedUser:
    """The case's user, seeded by the case, so their wording does not depend on batching or on other cases."""
    return SimulatedUser(case.goal, random.Random(case.case_id))


def user_turn(user: SimulatedUser, reply: str) -> tuple[str, bool]:
    """What the user says to an assistant message that did not act (the detail it asks for, or to go ahead), and
    whether the message asked for a detail."""
    asked = user.asked_for(reply) is not None
    return (user.answer(reply) if asked else GO_AHEAD), asked


def play_chats(cases: list[ChatCase], backend: Backend, max_turns: int = 4, batch_size: int = 16,
               progress: bool = False) -> list[ChatOutcome]:
    """Play every case against the simulated user; outcomes in the order of `cases`.

    Up to `batch_size` chats advance together, one `backend.generate` call per round; a finished chat
    frees its slot at once. A reply that parses as an action is run and graded, the model is asked once
    more (to confirm), and the chat ends. `max_turns` bounds the replies before acting: an opening lacks at
    most two details, so the expert acts in its third reply at the latest, and the fourth leaves room for one
    needless question (a model that never acts, like the base model, is not played for longer than that).
    """
    if max_turns < 1 or batch_size < 1:
        raise ValueError("max_turns and batch_size must be at least 1")
    queue = list(reversed(list(enumerate(cases))))
    active: list[tuple[int, _OpenChat]] = []
    outcomes: dict[int, ChatOutcome] = {}
    bar = tqdm(total=len(cases), desc=f"{backend.name} chats", disable=not progress)
    try:
        while queue or active:
            while queue and len(active) < batch_size:
                index, case = queue.pop()
                user = simulated_user(case)
                messages = [{"role": "system", "content": CHAT_SYSTEM_PROMPT},
                            {"role": "user", "content": case.opening}]
                active.append((index, _OpenChat(case, user, messages)))
            replies = backend.generate([[dict(m) for m in chat.messages] for _, chat in active])
            if len(replies) != len(active):
                raise ValueError(f"{backend.name} returned {len(replies)} replies for {len(active)} chats")
            still_open = []
            for (index, chat), reply in zip(active, replies):
                ended = _advance(chat, reply, max_turns)
                if ended is None:
                    still_open.append((index, chat))
                else:
                    outcomes[index] = chat.outcome(ended)
                    bar.update(1)
            active = still_open
    finally:
        bar.close()
    return [outcomes[i] for i in range(len(cases))]


# ---- The scripted assistant: reads the chat (and the user's contacts), never the goal. ----

_PHONE = re.compile(r"\(?\b\d{3}\)?[\s.-]?\d{3}[\s.-]?\d{4}\b")
_MAX_AMOUNT_WORDS = 6  # "12 dollars and 50 cents" is the longest way an amount is said
_EDGE_PUNCTUATION = ".,!?;:)(\"'-"
# parse_amount reads a lone "a" as one dollar ("a buck") and "k" as a thousand; alone they are not amounts.
_NOT_AMOUNTS = {"a", "an", "k"}
_NOTE_BODY = r"(?P<note>[^,.!?;:()\"<>]+?)"
# A note ends at punctuation, at a separator before the next clause, or at a polite closing.
_NOTE_END = (r"(?=\s*(?:$|[,.!?;:)\"]|\s-\s)|\s+(?:so|please|pls|thx|thanks|thank you|asap|when you get a chance"
             r"|right away|real quick|for me|I covered)\b)")
_NOTE_PATTERNS = tuple(re.compile(pattern, re.I) for pattern in (
    r"\"(?P<note>[^\"]+)\"",
    r"\bmemo:\s*" + _NOTE_BODY + _NOTE_END,
    r"\((?P<note>[^()<>]+)\)",
    r"\bit'?s for " + _NOTE_BODY + _NOTE_END,
    r"\bfor (?:my|their) (?:share|half) of " + _NOTE_BODY + _NOTE_END,
    r"\bto cover " + _NOTE_BODY + _NOTE_END,
    r"^\s*(?:for|re) " + _NOTE_BODY + r"\s*[,:]",
    r"\bfor " + _NOTE_BODY + _NOTE_END,
    r"\s-\s" + _NOTE_BODY + _NOTE_END,
))
# "ask Mike for the money", "for me?", "send it - thank you": words a purpose never contains.
_NOT_NOTE_WORDS = {"it", "me", "them", "money", "owe", "owes", "what", "thank", "thanks", "you", "payment", "request"}
# "bill" only as a verb ("bill <recipient>", "bill them"), not "the phone bill"; "get" not in "when you get a chance".
_REQUEST_WORDS = re.compile(r"\b(?:request|ask|collect|charge|invoice|borrowed|owes?\s+me|paid\s+me)\b"
                            r"|\bbill\s+(?:<recipient>|<amount>|them)|\bget\b(?!\s+a\s+chance).*\bback\b", re.I)
_ANSWER_LEAD = re.compile(r"^\s*(?:it'?s\s+for|for)\s+", re.I)


@dataclass
class Understanding:
    """What the assistant has gathered from the user so far."""

    intent: str = "send_money"
    contact: Contact | None = None
    recipient_text: str | None = None
    amount: float | None = None
    note: str | None = None

    def first_missing(self) -> str | None:
        known = {"recipient": self.contact, "amount": self.amount, "note": self.note}
        return next((slot for slot in SLOT_ORDER if known[slot] is None), None)

    def as_goal(self) -> UserGoal:
        full_name = f"{self.contact.first_name} {self.contact.last_name}"
        return UserGoal(self.intent, full_name, self.recipient_text, self.amount, self.note)


def _mask(text: str, start: int, end: int, placeholder: str) -> str:
    return text[:start] + placeholder + text[end:]


def _find_recipient(text: str, contacts: list[Contact]) -> tuple[int, int, Contact] | None:
    """The contact the text names (full name, first name, nickname or phone number), as (start, end, contact)."""
    found = []
    for match in _PHONE.finditer(text):
        digits = re.sub(r"\D", "", match.group())
        for contact in contacts:
            if re.sub(r"\D", "", contact.phone_number) == digits:
                found.append((match.start(), match.end(), contact))
    for contact in contacts:
        for name in filter(None, (f"{contact.first_name} {contact.last_name}", contact.first_name, contact.nickname)):
            for match in re.finditer(rf"(?<!\w){re.escape(name)}(?!\w)", text, re.I):
                found.append((match.start(), match.end(), contact))
    if not found or len({id(contact) for _, _, contact in found}) > 1:  # nobody, or two people: ask
        return None
    return max(found, key=lambda hit: hit[1] - hit[0])


def _find_amount(text: str) -> tuple[int, int, float] | None:
    """The longest run of words that states an amount ("12 dollars and 50 cents" over "12"), as (start, end, value)."""
    words = list(re.finditer(r"\S+", text))
    best = None
    for first in range(len(words)):
        for last in range(first, min(first + _MAX_AMOUNT_WORDS, len(words))):
            start, end = words[first].start(), words[last].end()
            phrase = text[start:end]
            stripped = phrase.strip(_EDGE_PUNCTUATION + " ")
            if not stripped or stripped.lower() in _NOT_AMOUNTS:
                continue
            value = parse_amount(stripped)
            if value is not None and value > 0 and (best is None or last - first > best[0]):
                offset = start + phrase.index(stripped)
                best = (last - first, offset, offset + len(stripped), value)
    return None if best is None else best[1:]


def _plausible_note(note: str) -> bool:
    words = set(re.findall(r"[a-z']+", note.lower()))
    return bool(words) and not words & _NOT_NOTE_WORDS


def _find_note(text: str) -> tuple[int, int, str] | None:
    """The payment's purpose, from how people state one ("for lunch", "(rent)", "memo: gas"), as (start, end, note)."""
    for pattern in _NOTE_PATTERNS:
        # Every start, not only non-overlapping matches: in "ask Ann for what they owe me for gas" the
        # rejected "what they owe me for gas" covers the "for gas" that holds the note.
        match = pattern.search(text)
        while match is not None:
            note = match.group("note").strip()
            if _plausible_note(note):
                return match.start("note"), match.end("note"), note
            match = pattern.search(text, match.start() + 1)
    return None


def _asked_slot(message: str) -> str | None:
    message = shown_text(message)
    if "?" not in message:
        return None
    return next((slot for slot, pattern in SLOT_QUESTIONS.items() if pattern.search(message)), None)


def _read_message(text: str, asked: str | None, contacts: list[Contact], belief: Understanding,
                  opening: bool) -> None:
    """Fill in whatever the belief still lacks from one user message; recipient first, so a phone number is not
    read as an amount, and the amount before the note, so "for $20" is not read as a purpose."""
    text = _PHONE.sub(lambda m: m.group() if any(
        re.sub(r"\D", "", m.group()) == re.sub(r"\D", "", c.phone_number) for c in contacts) else "<number>", text)
    recipient = _find_recipient(text, contacts)
    if recipient is not None:
        start, end, contact = recipient
        if belief.contact is None:
            belief.contact, belief.recipient_text = contact, text[start:end]
        text = _mask(text, start, end, "<recipient>")
    amount = _find_amount(text)
    if amount is not None:
        start, end, value = amount
        if belief.amount is None:
            belief.amount = value
        text = _mask(text, start, end, "<amount>")
    if asked == "note" and belief.note is None:  # the answer to "what is it for?" is the purpose itself
        answer = _ANSWER_LEAD.sub("", text).strip().rstrip(_EDGE_PUNCTUATION).strip()
        if _plausible_note(answer):
            belief.note = answer
    note = _find_note(text)
    if note is not None:
        start, end, value = note
        if belief.note is None:
            belief.note = value
        text = _mask(text, start, end, "<note>")
    if opening:
        belief.intent = "request_money" if _REQUEST_WORDS.search(text) else "send_money"


def understand(chat: list[dict], contacts: list[Contact]) -> Understanding:
    """What the user has said so far: intent from the opening, details from any of their messages."""
    belief = Understanding()
    asked = None
    first_user_message = True
    for message in chat:
        if message["role"] == "assistant":
            asked = _asked_slot(message["content"])
        elif message["role"] == "user":
            _read_message(message["content"], asked, contacts, belief, first_user_message)
            first_user_message, asked = False, None
    return belief


class ScriptedChatAssistant:
    """The upper bound: the training data's scripted assistant as a Backend, working from the chat alone.

    It asks for each detail it cannot read from the user's messages (recipient, amount, note, in that
    order), then acts with the training data's code, then confirms. Besides the chat it knows only the
    user's contacts, as an agent could by opening the phone app; it never sees the goal or the task's checks.
    """

    name = "expert"

    def __init__(self, contact_books: dict[str, list[Contact]]):
        self.contact_books = contact_books  # the user's contacts, by the chat's opening message

    @classmethod
    def for_cases(cls, cases: list[ChatCase]) -> "ScriptedChatAssistant":
        return cls({case.opening: list(case.world.contacts) for case in cases})

    def generate(self, chats: list[list[dict]]) -> list[str]:
        return [self._reply(chat) for chat in chats]

    def _reply(self, chat: list[dict]) -> str:
        opening = next(m["content"] for m in chat if m["role"] == "user")
        if opening not in self.contact_books:
            raise KeyError(f"no contacts known for the chat that opens with {opening!r}")
        belief = understand(chat, self.contact_books[opening])
        missing = belief.first_missing()
        if chat[-1]["role"] == "tool":
            # It acts only once everything is known; a chat where something else acted early gets a bare reply.
            return chat_confirmation(belief.as_goal()) if missing is None else "Done."
        if missing is not None:
            return chat_question(missing, belief.intent, {"recipient_text": belief.recipient_text,
                                                          "amount": belief.amount, "note": belief.note})
        return format_completion(*chat_action(belief.as_goal()))


# ---- Scores and files ----

def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def _rate(outcomes: list[ChatOutcome], counts=lambda o: o.success) -> float | None:
    return round(100 * sum(bool(counts(o)) for o in outcomes) / len(outcomes), 1) if outcomes else None


def summarize_chats(outcomes: list[ChatOutcome]) -> dict:
    """Success rate (%), user turns to success (successful chats) and overall, and the same by details left out."""
    successes = [o for o in outcomes if o.success]
    summary = {
        "cases": len(outcomes),
        "success_rate": _rate(outcomes),
        "avg_turns_to_success": _mean([o.user_turns for o in successes]),
        "avg_turns": _mean([o.user_turns for o in outcomes]),
        "avg_assistant_turns": _mean([o.assistant_turns for o in outcomes]),
    }
    for reason in ("acted", "max_turns", "parse_error"):
        summary[f"ended_{reason}"] = sum(o.ended == reason for o in outcomes)
    # Asking: of the chats whose opening leaves a detail out, the share where the model asked for one; of the
    # complete ones, the share with a needless question.
    summary["asked_rate_missing"] = _rate([o for o in outcomes if o.missing], lambda o: o.questions > 0)
    summary["asked_rate_complete"] = _rate([o for o in outcomes if not o.missing], lambda o: o.questions > 0)
    # By what the user wants: a model that mostly guesses the intent succeeds on one kind and fails the other
    for intent in sorted({o.intent for o in outcomes if o.intent}):
        group = [o for o in outcomes if o.intent == intent]
        summary[f"cases_{intent}"] = len(group)
        summary[f"success_rate_{intent}"] = _rate(group)
    for count in sorted({len(o.missing) for o in outcomes}):
        group = [o for o in outcomes if len(o.missing) == count]
        summary[f"cases_missing{count}"] = len(group)
        summary[f"success_rate_missing{count}"] = _rate(group)
        summary[f"avg_turns_to_success_missing{count}"] = _mean([o.user_turns for o in group if o.success])
    return summary


OUTCOME_COLUMNS = ["case_id", "model", "intent", "success", "user_turns", "assistant_turns", "ended", "missing",
                   "questions", "transcript"]


def save_chat_evaluation(outcomes: list[ChatOutcome], model: str, directory: str | Path,
                         metadata: dict) -> dict[str, Path]:
    """Write `<model>_chat_outcomes.csv` (one row per case, transcript as JSON text), `<model>_chat_summary.csv`
    and `<model>_chat_metadata.json` into directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]", "_", model)  # "org/model" would otherwise be a folder
    paths = {"outcomes": directory / f"{stem}_chat_outcomes.csv",
             "summary": directory / f"{stem}_chat_summary.csv",
             "metadata": directory / f"{stem}_chat_metadata.json"}
    with paths["outcomes"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=OUTCOME_COLUMNS)
        writer.writeheader()
        for o in outcomes:
            writer.writerow({"case_id": o.case_id, "model": model, "intent": o.intent, "success": o.success,
                             "user_turns": o.user_turns, "assistant_turns": o.assistant_turns, "ended": o.ended,
                             "missing": ";".join(o.missing), "questions": o.questions,
                             "transcript": json.dumps(o.transcript, ensure_ascii=False)})
    summary = {"model": model, **summarize_chats(outcomes)}
    with paths["summary"].open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary))
        writer.writeheader()
        writer.writerow(summary)
    write_json(paths["metadata"], {**metadata, "model": model, "summary": summary})
    return paths
