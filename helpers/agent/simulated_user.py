"""A scripted user who knows what they want but may leave details out, and answers the assistant's questions."""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field

from helpers.tasks.worlds import format_amount


@dataclass
class UserGoal:
    """What the user wants, in full, and how they refer to the other person."""

    intent: str  # send_money | request_money
    recipient: str  # full name
    recipient_text: str  # how the user names them: full name, first name, nickname or phone number
    amount: float
    note: str


SLOT_QUESTIONS = {
    "amount": re.compile(r"\bhow much\b|\bamount\b", re.I),
    "recipient": re.compile(r"\bwho\b|\bwhom\b|\brecipient\b|\bwhich (person|contact)\b", re.I),
    "note": re.compile(r"\bwhat (is|was|'s) (it|this|the payment|the request) for\b|\bnote\b|\bpurpose\b|\bdescription\b", re.I),
}


def question_of(message: str) -> str | None:
    """The `question` of a well-formed JSON {thought, question} reply; None for any other message (an action,
    plain text, or an object that is broken or cut off)."""
    start, end = message.find("{"), message.rfind("}")
    if start != -1 and end > start:
        try:
            data = json.JSONDecoder(strict=False).decode(message[start:end + 1])
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("question"), str):
            return data["question"]
    return None


def shown_text(message: str) -> str:
    """What the user reads of an assistant message: the `question` of a JSON {thought, question} reply (the
    thought is the assistant's own), otherwise the whole message."""
    question = question_of(message)
    return message if question is None else question


@dataclass
class SimulatedUser:
    goal: UserGoal
    rng: random.Random = field(default_factory=random.Random)
    questions: int = 0

    def asked_for(self, message: str) -> str | None:
        """Which detail an assistant message asks for, if it asks a question at all."""
        message = shown_text(message)
        if "?" not in message:
            return None
        for slot, pattern in SLOT_QUESTIONS.items():
            if pattern.search(message):
                return slot
        return "unclear"

    def answer(self, message: str) -> str:
        """Reply to an assistant question with the detail it asks for."""
        self.questions += 1
        slot = self.asked_for(message)
        g = self.goal
        if slot == "amount":
            return self.rng.choice((f"${format_amount(g.amount)}.", f"{format_amount(g.amount)} dollars.",
                                    f"Make it ${format_amount(g.amount)}."))
        if slot == "recipient":
            return self.rng.choice((f"{g.recipient_text}.", f"It's {g.recipient_text}.", f"To {g.recipient_text}."
                                    if g.intent == "send_money" else f"From {g.recipient_text}."))
        if slot == "note":
            return self.rng.choice((f"It's for {g.note}.", f"For {g.note}.", f"{g.note[0].upper()}{g.note[1:]}."))
        return "Sorry, I'm not sure what you need from me. " + (
            "I want to send money." if g.intent == "send_money" else "I want to request money.")
