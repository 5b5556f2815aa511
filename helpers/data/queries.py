"""Synthetic send/request-money utterances in varied wording, each with exact ground truth for what it says."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Sequence

INTENTS = ("send_money", "request_money")
SLOTS = ("recipient", "amount", "note")
REF_KINDS = ("name", "first_name", "nickname", "phone")


@dataclass(frozen=True)
class Recipient:
    """A person one can pay or ask for money, with every way an utterance may refer to them."""

    full_name: str
    nickname: str | None = None
    phone_number: str | None = None


@dataclass(frozen=True)
class PaymentQuery:
    """One utterance and its ground truth; every `*_text` is an exact substring of `text`."""

    text: str
    intent: str
    recipient: str | None
    recipient_ref: str | None
    recipient_text: str | None
    amount: float | None
    amount_text: str | None
    note: str | None
    note_text: str | None
    missing: tuple[str, ...]
    # (intended word, typed word) for each typo, so the noise is auditable; typos only hit non-slot, non-verb words.
    typos: tuple[tuple[str, str], ...] = ()


DEFAULT_RECIPIENTS: tuple[Recipient, ...] = tuple(Recipient(*row) for row in (
    ("Michael Chen", "Mike", "415-555-0134"),
    ("Priya Patel", None, "312-555-0178"),
    ("Robert Smith", "Bob", "617-555-0112"),
    ("Elizabeth Johnson", "Liz", "212-555-0147"),
    ("Jennifer Alvarez", "Jen", "646-555-0191"),
    ("Christopher Nguyen", "Chris", "718-555-0163"),
    ("Katherine O'Brien", "Katie", "202-555-0108"),
    ("William Davis", "Billy", "305-555-0155"),
    ("Alexander Kim", "Alex", "404-555-0126"),
    ("Daniel Garcia", "Danny", "512-555-0183"),
    ("Samantha Rivera", "Sam", "206-555-0119"),
    ("Jonathan Brooks", "Jon", "303-555-0172"),
    ("Margaret Wilson", "Maggie", "702-555-0140"),
    ("Anthony Russo", "Tony", "213-555-0197"),
    ("Nicholas Park", "Nick", "310-555-0104"),
    ("Rebecca Stein", "Becky", "503-555-0166"),
    ("Benjamin Carter", "Ben", "614-555-0121"),
    ("Olivia Martinez", "Liv", "919-555-0159"),
    ("Matthew Harris", "Matt", "615-555-0138"),
    ("Victoria Adams", "Tori", "773-555-0185"),
    ("Joseph Rossi", "Joey", "347-555-0117"),
    ("Aisha Mohammed", None, "469-555-0144"),
    ("Wei Zhang", None, "628-555-0102"),
    ("Santiago Herrera", "Santi", "786-555-0170"),
    ("Fatima Hassan", None, "571-555-0133"),
    ("Kenji Watanabe", None, "808-555-0189"),
    ("José Ramírez", "Pepe", "915-555-0150"),
    ("Gabriel Silva", "Gabe", "617-555-0176"),
    ("Isabella Moreno", "Bella", "480-555-0129"),
    ("Andrew Thompson", "Drew", "612-555-0164"),
    ("Jessica Taylor", "Jess", "215-555-0111"),
    ("Timothy Walsh", "Tim", "412-555-0195"),
    ("Patricia Kelly", "Patty", "314-555-0157"),
    ("Richard Evans", "Rick", "713-555-0142"),
    ("Deborah Cohen", "Debbie", "917-555-0168"),
    ("Edward Lewis", "Eddie", "504-555-0106"),
    ("Susan Clark", "Sue", "206-555-0181"),
    ("Charles Wright", "Charlie", "480-555-0137"),
    ("Ngozi Okafor", None, "832-555-0115"),
    ("Mateo Fernandez", None, "305-555-0193"),
    ("Hannah Schmidt", None, "720-555-0128"),
    ("Dmitri Volkov", "Dima", "929-555-0174"),
))

# (purpose as said, whether "the <purpose>" also reads naturally)
PURPOSES: tuple[tuple[str, bool], ...] = (
    ("lunch", True), ("dinner", True), ("brunch", True), ("breakfast", True), ("coffee", True),
    ("drinks", True), ("pizza", True), ("takeout", True), ("sushi", True), ("tacos", True),
    ("groceries", True), ("gas", True), ("Uber", True), ("Lyft", True), ("cab fare", True),
    ("parking", True), ("rent", True), ("utilities", True), ("the electric bill", False),
    ("the internet bill", False), ("the phone bill", False), ("concert tickets", True),
    ("movie tickets", True), ("plane tickets", True), ("a birthday gift", False), ("a wedding gift", False),
    ("the baby shower gift", False), ("the hotel room", False), ("Airbnb", True), ("the road trip", False),
    ("the ski trip", False), ("textbooks", True), ("tuition", False), ("babysitting", False),
    ("dog walking", False), ("a haircut", False), ("the bar tab", False), ("happy hour", False),
    ("bowling", False), ("camping gear", True), ("office supplies", True), ("the carpool", False),
    ("house cleaning", False), ("fantasy football dues", True), ("Netflix", False), ("the loan", False),
)


@dataclass(frozen=True)
class _Frame:
    """One verb and the ways to say it. `{R}`/`{A}` mark the recipient and amount; `<...>` marks the
    verb words, which typos never touch so that the intent stays recognisable from the text."""

    complete: tuple[str, ...]
    without_amount: tuple[str, ...] = ()
    without_recipient: tuple[str, ...] = ()
    takes_channel: bool = False  # "send ... on Venmo" is fine; "zelle ... on Venmo" contradicts itself

    def templates(self, missing: tuple[str, ...]) -> tuple[str, ...]:
        if "recipient" in missing:
            return self.without_recipient
        if "amount" in missing:
            return self.without_amount
        return self.complete


_FRAMES: dict[str, tuple[_Frame, ...]] = {
    "send_money": (
        _Frame(("<send> {A} to {R}", "<send> {R} {A}", "<send> {A} over to {R}"),
               ("<send> {R} some money", "<send> money to {R}", "<send> {R} what I owe"),
               ("<send> {A}", "<send> {A} over"), takes_channel=True),
        _Frame(("<pay> {R} {A}", "<pay> {A} to {R}", "<pay> {R} back {A}"),
               ("<pay> {R}", "<pay> {R} back"), ("<pay> {A}",), takes_channel=True),
        _Frame(("<shoot over> {A} to {R}", "<shoot> {A} <over> to {R}", "<shoot> {R} <over> {A}"),
               ("<shoot> some money <over> to {R}",), ("<shoot over> {A}",)),
        _Frame(("<wire> {A} to {R}", "<wire> {R} {A}"), ("<wire> money to {R}", "<wire> {R} the money"),
               ("<wire> {A}",)),
        _Frame(("<transfer> {A} to {R}", "<transfer> {R} {A}"),
               ("<transfer> money to {R}", "<transfer> some cash to {R}"), ("<transfer> {A}",), takes_channel=True),
        _Frame(("<venmo> {R} {A}", "<venmo> {A} to {R}"), ("<venmo> {R}",), ("<venmo> {A}",)),
        _Frame(("<zelle> {R} {A}", "<zelle> {A} to {R}"), ("<zelle> {R}", "<zelle> {R} some money"), ("<zelle> {A}",)),
        _Frame(("<paypal> {R} {A}", "<paypal> {A} to {R}"), ("<paypal> {R}",)),
        _Frame(("<cash app> {R} {A}",), ("<cash app> {R}",)),
        _Frame(("<give> {R} {A}", "<give> {A} to {R}"), ("<give> {R} some money", "<give> {R} what I owe them")),
        _Frame(("<spot> {R} {A}",), ("<spot> {R} some cash",)),
        _Frame(("<ping> {R} {A}", "<ping> {A} to {R}"), ("<ping> {R} some money",)),
        _Frame(("<hit> {R} <up with> {A}",), ("<hit> {R} <up with> some cash",)),
        _Frame(("<throw> {A} {R}'s way", "<throw> {R} {A}"), ("<throw> some money {R}'s way",)),
        _Frame(("<front> {R} {A}",), ("<front> {R} some money",)),
        _Frame(("<toss> {R} {A}", "<toss> {A} to {R}"), ("<toss> {R} a few bucks",)),
    ),
    "request_money": (
        _Frame(("<request> {A} from {R}",), ("<request> money from {R}", "<request> a payment from {R}"),
               ("<request> {A}",), takes_channel=True),
        _Frame(("<ask> {R} <for> {A}", "<ask> {R} <for> {A} back"),
               ("<ask> {R} <for> the money", "<ask> {R} <for> what they owe me"), ("<ask for> {A}",)),
        _Frame(("<collect> {A} from {R}",), ("<collect> from {R}", "<collect> what {R} owes me"), ("<collect> {A}",)),
        _Frame(("<charge> {R} {A}",), ("<charge> {R}",), ("<charge> {A}",)),
        _Frame(("<bill> {R} {A}", "<bill> {R} <for> {A}"), ("<bill> {R}",), ("<bill> {A}",)),
        _Frame(("<get> {A} <back> from {R}", "<get> {R} to pay me <back> {A}"),
               ("<get> my money <back> from {R}",), ("<get> {A} <back>",)),
        _Frame(("<invoice> {R} <for> {A}", "<invoice> {R} {A}"), ("<invoice> {R}",)),
        _Frame(("<send> {R} a <payment request> for {A}", "<send> a <request> for {A} to {R}"),
               ("<send> {R} a <payment request>",), ("<send> a <request> for {A}",), takes_channel=True),
    ),
}

# A stated situation ("I owe Mike $20 for lunch") followed by a short instruction ("send it").
_SITUATIONS: dict[str, _Frame] = {
    "send_money": _Frame(("I owe {R} {A}", "I still owe {R} {A}", "{R} needs {A} from me", "{R} covered me, I owe them {A}"),
                         ("I owe {R}", "I still owe {R} money", "{R} needs money from me")),
    "request_money": _Frame(("{R} owes me {A}", "{R} still owes me {A}", "{R} borrowed {A} from me"),
                            ("{R} owes me money", "{R} still owes me", "{R} never paid me back")),
}
_FOLLOW_UPS: dict[str, tuple[str, ...]] = {
    "send_money": ("<send> it", "<send> it over", "<pay> them", "<pay> them back", "<venmo> them", "<zelle> it to them",
                   "<transfer> it", "<wire> it", "<paypal> them"),
    "request_money": ("<request> it", "<ask> them <for> it", "<bill> them", "<charge> them", "<collect> it",
                      "<get> it <back>", "<send> them a <request>", "<invoice> them"),
}

_IMPERATIVE_LEADS = ("", "", "", "please ", "hey, ", "hey, please ", "I need you to ", "go ahead and ",
                     "quick favor: ", "ok so ", "pls ", "yo, ", "hi! please ")
_QUESTION_LEADS = ("could you ", "can you ", "would you ", "hey, can you ", "hey could you ", "can u ",
                   "could you please ", "hi, could you ")
_IMPERATIVE_CLOSINGS = ("", "", ".", "!", " please", " please.", ", thanks!", ". Thanks!", " thx", " asap",
                        " when you get a chance.", " right away.", " - thank you!")
_QUESTION_CLOSINGS = ("?", "?", " please?", " for me?", "? thanks!", "? thx", "", " real quick?")
# Leads that still read well in the middle of an utterance, after a note or a stated situation.
_INNER_LEADS = ("", "", "please ", "can you ", "could you ", "just ", "pls ")
_SITUATION_SEPARATORS = (". ", ", ", " - ", "; ", " so ")
_CHANNELS = (" on Venmo", " via Zelle", " through PayPal", " with Cash App", " over Zelle", " on Cash App")

_NOTE_TAILS = (" for {N}", " for {N}", " to cover {N}", " ({N})", " - {N}", ", it's for {N}", ", memo: {N}",
               ' with the note "{N}"')
_NOTE_TAILS_WITH_ARTICLE = {
    "send_money": (" for the {N}", " to cover the {N}", " for my share of the {N}", " for my half of the {N}"),
    "request_money": (" for the {N}", " to cover the {N}", " for their share of the {N}", " for their half of the {N}",
                      " for the {N} I covered"),
}
_NOTE_LEADS = ("for {N}, ", "for {N}: ", "re {N}: ")
_NOTE_LEADS_WITH_ARTICLE = ("for the {N}, ",)

_UNIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
               "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
_TENS_WORDS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALE_WORDS = {"hundred": 100, "thousand": 1000, "grand": 1000, "k": 1000}
_BANKNOTE_SLANG = {"fiver": 5, "tenner": 10}
# Slang renderings; number words inside them ("a twenty", "two grand") are parsed compositionally.
_SLANG_AMOUNTS = {1: ("a buck",), 5: ("a fiver",), 10: ("a tenner",), 20: ("a twenty",), 50: ("a fifty",),
                  1000: ("a grand",), 2000: ("two grand",)}
_ROUND_AMOUNTS = (1, 5, 5, 10, 10, 15, 20, 20, 25, 30, 40, 45, 50, 50, 60, 75, 80, 100, 100, 120, 150, 200, 250,
                  300, 400, 500, 1000, 1200, 1500, 2000)
_LARGEST_SPELLED_OUT = 500  # beyond a few hundred people write digits, except round hundreds ("fifteen hundred")

_CASING_STYLES = ("sentence", "as_typed", "lower", "upper")
_CASING_WEIGHTS = (0.6, 0.2, 0.17, 0.03)
_REF_WEIGHTS = {"name": 0.3, "first_name": 0.3, "nickname": 0.25, "phone": 0.15}
_PAIR_MISSING_SHARE = 0.2  # of the utterances with a detail left out, how many leave out two
_TYPO_WORD = re.compile(r"[A-Za-z]{3,}")
_SENTENCE_START = re.compile(r"^|(?<=[.!?])\s+")
_SLOT_OF_PLACEHOLDER = {"{R}": "recipient", "{A}": "amount", "{N}": "note"}
_PLACEHOLDER_OR_VERB = re.compile(r"(\{[RAN]\}|<[^<>]+>)")


def generate_queries(n: int = 5000, seed: int = 0, recipients: Sequence[Recipient] | None = None,
                     intents: Sequence[str] = INTENTS, missing_rate: float = 0.15,
                     typo_rate: float = 0.1) -> list[PaymentQuery]:
    """`n` distinct utterances, the same ones for the same arguments; ValueError if `n` distinct ones can't be found."""
    people = tuple(DEFAULT_RECIPIENTS if recipients is None else recipients)
    _check_arguments(n, people, intents, missing_rate, typo_rate)
    ref_kinds = _unambiguous_ref_kinds(people)
    intent_choices = tuple(intents)
    rng = random.Random(seed)
    queries: list[PaymentQuery] = []
    seen_texts: set[str] = set()
    # Generous enough that only a truly exhausted space of wordings runs out of attempts.
    attempts_left = 20 * n + 1000
    while len(queries) < n:
        if attempts_left == 0:
            raise ValueError(f"could only produce {len(queries)} distinct utterances of the {n} requested; "
                             "ask for fewer or supply more recipients or intents")
        attempts_left -= 1
        query = _compose(rng, rng.choice(intent_choices), people, ref_kinds, missing_rate, typo_rate)
        if query.text not in seen_texts:
            seen_texts.add(query.text)
            queries.append(query)
    return queries


def parse_amount(text: str) -> float | None:
    """Dollars stated by an amount phrase: "$1,200", "12.50 USD", "forty-five bucks", "a tenner",
    "12 dollars and 50 cents", "1.5k"; None if it isn't one."""
    spoken = text.strip().lower().replace(",", "")
    cents = 0
    with_cents = re.fullmatch(r"(.+?)\s+and\s+(.+?)\s+cents?", spoken)
    if with_cents:
        spoken, cents_spoken = with_cents.groups()
        cents_value = _parse_quantity(cents_spoken)
        if cents_value is None or not cents_value.is_integer() or not 0 < cents_value < 100:
            return None
        cents = int(cents_value)
    spoken = re.sub(r"^(?:\$|usd\s+)\s*", "", spoken)
    spoken = re.sub(r"\s*(?:dollars?|bucks?|usd)$", "", spoken)
    value = _parse_quantity(spoken)
    return None if value is None else round(value + cents / 100, 2)


def number_to_words(number: int) -> str:
    """English words for 0..9999 the plain way: 45 -> "forty-five", 120 -> "one hundred twenty"."""
    if not 0 <= number <= 9999:
        raise ValueError(f"number_to_words covers 0..9999, not {number}")
    if number < 20:
        return _UNIT_WORDS[number]
    if number < 100:
        tens, units = divmod(number, 10)
        return _TENS_WORDS[tens] + (f"-{_UNIT_WORDS[units]}" if units else "")
    scale, size = ("thousand", 1000) if number >= 1000 else ("hundred", 100)
    head, rest = divmod(number, size)
    return f"{number_to_words(head)} {scale}" + (f" {number_to_words(rest)}" if rest else "")


def _check_arguments(n, people, intents, missing_rate, typo_rate) -> None:
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    if not intents or any(intent not in INTENTS for intent in intents):
        raise ValueError(f"intents must be a non-empty selection of {INTENTS}, got {tuple(intents)!r}")
    if not people or any(not person.full_name.strip() for person in people):
        raise ValueError("recipients must be a non-empty list of people with names")
    for label, rate in (("missing_rate", missing_rate), ("typo_rate", typo_rate)):
        if not 0 <= rate <= 1:
            raise ValueError(f"{label} must be between 0 and 1, got {rate}")


def _first_name(person: Recipient) -> str | None:
    parts = person.full_name.split()
    return parts[0] if len(parts) > 1 else None


def _unambiguous_ref_kinds(people: tuple[Recipient, ...]) -> dict[str, tuple[str, ...]]:
    """Per person, the ways of referring to them that point at nobody else (two Mikes make "Mike" unusable)."""
    short_name_counts: dict[str, int] = {}
    for person in people:
        for short_name in {_first_name(person), person.nickname} - {None}:
            short_name_counts[short_name.lower()] = short_name_counts.get(short_name.lower(), 0) + 1
    kinds = {}
    for person in people:
        first, nickname = _first_name(person), person.nickname
        usable = {
            "name": True,
            "first_name": first is not None and short_name_counts[first.lower()] == 1,
            "nickname": nickname is not None and short_name_counts[nickname.lower()] == 1,
            "phone": bool(person.phone_number),
        }
        kinds[person.full_name] = tuple(kind for kind in REF_KINDS if usable[kind])
    return kinds


def _compose(rng: random.Random, intent: str, people, ref_kinds, missing_rate: float,
             typo_rate: float) -> PaymentQuery:
    missing = _choose_missing(rng, missing_rate)
    person = rng.choice(people)
    kinds = ref_kinds[person.full_name]
    ref_kind = rng.choices(kinds, weights=[_REF_WEIGHTS[kind] for kind in kinds])[0]
    amount = _sample_amount(rng)
    purpose, purpose_takes_article = rng.choice(PURPOSES)
    template = _template(rng, intent, missing, purpose_takes_article, phone_ref=ref_kind == "phone")
    slot_values = {"{R}": _refer_to(person, ref_kind, rng), "{A}": render_amount(amount, rng), "{N}": purpose}
    segments = [_segment(part, slot_values) for part in _PLACEHOLDER_OR_VERB.split(template) if part]
    segments = _apply_casing(segments, rng.choices(_CASING_STYLES, weights=_CASING_WEIGHTS)[0])
    typos: tuple[tuple[str, str], ...] = ()
    if rng.random() < typo_rate:
        segments, typos = _apply_typos(segments, rng)
    slot_texts = {kind: text for kind, text in segments if kind in SLOTS}
    return PaymentQuery(
        text="".join(text for _, text in segments),
        intent=intent,
        recipient=None if "recipient" in missing else person.full_name,
        recipient_ref=None if "recipient" in missing else ref_kind,
        recipient_text=slot_texts.get("recipient"),
        amount=None if "amount" in missing else amount,
        amount_text=slot_texts.get("amount"),
        note=None if "note" in missing else purpose,
        note_text=slot_texts.get("note"),
        missing=missing,
        typos=typos,
    )


def _choose_missing(rng: random.Random, missing_rate: float) -> tuple[str, ...]:
    if rng.random() >= missing_rate:
        return ()
    if rng.random() < _PAIR_MISSING_SHARE:
        # Leaving out recipient and amount together leaves too little to be a payment request.
        return rng.choice((("amount", "note"), ("recipient", "note")))
    return (rng.choice(SLOTS),)


def _template(rng: random.Random, intent: str, missing: tuple[str, ...], purpose_takes_article: bool,
              phone_ref: bool) -> str:
    """The wording of one utterance, with slot placeholders and verb markers still in."""
    note_tails = _NOTE_TAILS + (_NOTE_TAILS_WITH_ARTICLE[intent] if purpose_takes_article else ())
    note_tail = "" if "note" in missing else rng.choice(note_tails)
    layouts = ["instruction"] * 7
    if "note" not in missing:
        layouts.append("note_first")
    if "recipient" not in missing:
        layouts += ["situation"] * 2
    layout = rng.choice(layouts)

    if layout == "situation":
        opener = rng.choice(_SITUATIONS[intent].templates(missing))
        follow_up = rng.choice(_INNER_LEADS) + rng.choice(_FOLLOW_UPS[intent])
        return opener + note_tail + rng.choice(_SITUATION_SEPARATORS) + follow_up + _closing(rng, follow_up)

    # "{R}'s way" suits a name, not a phone number.
    options = [[core for core in frame.templates(missing) if not (phone_ref and "{R}'s" in core)]
               for frame in _FRAMES[intent]]
    frame_index = rng.choice([index for index, cores in enumerate(options) if cores])
    core = rng.choice(options[frame_index])
    if _FRAMES[intent][frame_index].takes_channel and rng.random() < 0.15:
        core += rng.choice(_CHANNELS)
    if layout == "note_first":
        note_leads = _NOTE_LEADS + (_NOTE_LEADS_WITH_ARTICLE if purpose_takes_article else ())
        lead = rng.choice(_INNER_LEADS)
        return rng.choice(note_leads) + lead + core + _closing(rng, lead)
    lead = rng.choice(_QUESTION_LEADS if rng.random() < 0.35 else _IMPERATIVE_LEADS)
    return lead + core + note_tail + _closing(rng, lead)


def _closing(rng: random.Random, lead: str) -> str:
    words = lead.split()
    closings = _QUESTION_CLOSINGS if {"can", "could", "would", "u"} & set(words) else _IMPERATIVE_CLOSINGS
    if {"please", "pls"} & set(words):  # one "please" per utterance is enough
        closings = tuple(closing for closing in closings if "please" not in closing)
    return rng.choice(closings)


def _segment(part: str, slot_values: dict[str, str]) -> tuple[str, str]:
    """(kind, text): kind is a slot name, "verb" (protected from typos) or "literal"."""
    if part in slot_values:
        return _SLOT_OF_PLACEHOLDER[part], slot_values[part]
    if part.startswith("<"):
        return "verb", part[1:-1]
    return "literal", part


def _refer_to(person: Recipient, ref_kind: str, rng: random.Random) -> str:
    if ref_kind == "name":
        return person.full_name
    if ref_kind == "first_name":
        return _first_name(person)
    if ref_kind == "nickname":
        return person.nickname
    digits = re.sub(r"\D", "", person.phone_number)
    if len(digits) != 10:
        return person.phone_number
    area, exchange, line = digits[:3], digits[3:6], digits[6:]
    return rng.choice((person.phone_number, person.phone_number, f"({area}) {exchange}-{line}",
                       f"{area}.{exchange}.{line}", digits))


def _sample_amount(rng: random.Random) -> float:
    """$1..$2000, leaning toward the round and small sums people actually send."""
    roll = rng.random()
    if roll < 0.35:
        return float(rng.choice(_ROUND_AMOUNTS))
    if roll < 0.65:
        return float(rng.randint(1, 300))
    if roll < 0.8:
        return float(rng.randint(300, 2000) if rng.random() < 0.5 else rng.randrange(300, 2001, 50))
    cents = rng.choice((25, 50, 75, 99, rng.randint(1, 99)))
    return round(rng.randint(1, 499) + cents / 100, 2)


def render_amount(amount: float, rng: random.Random) -> str:
    """An amount as people write it: "$25", "25 bucks", "twenty-five dollars", "a tenner", "$1,200.00", ..."""
    total_cents = round(amount * 100)
    dollars, cents = divmod(total_cents, 100)
    with_commas = dollars >= 1000 and rng.random() < 0.6
    digits = f"{dollars:,}" if with_commas else str(dollars)
    unit = "dollar" if dollars == 1 else "dollars"
    if cents:
        decimal = f"{digits}.{cents:02d}"
        cents_unit = "cent" if cents == 1 else "cents"
        options = [(4, f"${decimal}"), (2, decimal), (2, f"{decimal} dollars"), (1, f"{decimal} USD"),
                   (1, f"{digits} {unit} and {cents} {cents_unit}")]
    else:
        options = [(4, f"${digits}"), (1, f"${digits}.00"), (2, digits), (2, f"{digits} {unit}"),
                   (2, f"{digits} {'buck' if dollars == 1 else 'bucks'}"), (1, f"{digits} USD")]
        if _said_in_words(dollars):
            words = _spoken_number(dollars, rng)
            options += [(3, f"{words} {unit}"), (1, f"{words} {'buck' if dollars == 1 else 'bucks'}")]
            if dollars % 5 == 0:  # a bare "fifteen" or "two hundred" reads as money only when round
                options.append((1, words))
        options += [(3, slang) for slang in _SLANG_AMOUNTS.get(dollars, ())]
        if dollars >= 1000 and dollars % 100 == 0:
            thousands = f"{dollars / 1000:g}k"
            options += [(1, thousands), (1, f"${thousands}")]
    weights, renderings = zip(*options)
    return rng.choices(renderings, weights=weights)[0]


def _said_in_words(dollars: int) -> bool:
    """Whole sums people would spell out: anything up to a hundred, round ones up to a few hundred, round hundreds."""
    return dollars <= 100 or (dollars <= _LARGEST_SPELLED_OUT and dollars % 5 == 0) or dollars % 100 == 0


def _spoken_number(number: int, rng: random.Random) -> str:
    """Number words as people say them: "a hundred and twenty", "fifteen hundred", not only the textbook form."""
    if 1100 <= number < 2000 and number % 100 == 0 and rng.random() < 0.6:
        return f"{number_to_words(number // 100)} hundred"
    words = number_to_words(number)
    if number < 100:
        return words
    if rng.random() < 0.4:
        words = re.sub(r"^one (hundred|thousand)", r"a \1", words)
    if rng.random() < 0.3:
        words = re.sub(r"(hundred) (?=\w)", r"\1 and ", words)
    return words


def _apply_casing(segments: list[tuple[str, str]], style: str) -> list[tuple[str, str]]:
    """Case the whole utterance, slots included, so that slot texts stay exact substrings."""
    if style == "lower":
        return [(kind, text.lower()) for kind, text in segments]
    if style == "upper":
        return [(kind, text.upper()) for kind, text in segments]
    if style == "as_typed":
        return segments
    text = "".join(text for _, text in segments)
    starts = {match.end() for match in _SENTENCE_START.finditer(text)}
    cased, offset = [], 0
    for kind, part in segments:
        cased.append((kind, "".join(char.upper() if offset + i in starts else char for i, char in enumerate(part))))
        offset += len(part)
    return cased


def _apply_typos(segments: list[tuple[str, str]], rng: random.Random):
    """Swap, drop or double one letter in one or two words outside the slots and verbs."""
    spots = [(index, match.start(), match.end()) for index, (kind, text) in enumerate(segments)
             if kind == "literal" for match in _TYPO_WORD.finditer(text)]
    if not spots:
        return segments, ()
    count = 2 if len(spots) > 1 and rng.random() < 0.2 else 1
    segments = list(segments)
    typos = []
    # Right to left, so that editing one word doesn't shift the offsets of the other.
    for index, start, end in sorted(rng.sample(spots, count), reverse=True):
        kind, text = segments[index]
        word = text[start:end]
        typed = misspell(word, rng)
        segments[index] = (kind, text[:start] + typed + text[end:])
        typos.append((word, typed))
    return segments, tuple(reversed(typos))


def misspell(word: str, rng: random.Random) -> str:
    """The word with one letter swapped with the next, dropped or doubled."""
    swappable = [i for i in range(len(word) - 1) if word[i].lower() != word[i + 1].lower()]
    edit = rng.choice(("swap", "drop", "double") if swappable else ("drop", "double"))
    if edit == "swap":
        i = rng.choice(swappable)
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    i = rng.randrange(len(word))
    return word[:i] + word[i + 1:] if edit == "drop" else word[:i] + word[i] + word[i:]


def _parse_quantity(spoken: str) -> float | None:
    """A bare quantity in digits ("12.50", "1.5k") or in words ("a hundred and twenty", "two grand")."""
    spoken = spoken.strip()
    numeric = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|grand|thousand|hundred)?", spoken)
    if numeric:
        return float(numeric[1]) * _SCALE_WORDS.get(numeric[2] or "", 1)
    return _parse_number_words(spoken)


def _parse_number_words(spoken: str) -> float | None:
    tokens = [token for token in re.split(r"[\s-]+", spoken) if token and token != "and"]
    if tokens in (["a"], ["an"]):  # what is left of "a buck"
        return 1.0
    total, group, said_a_number = 0, 0, False
    for token in tokens:
        below_hundred = group % 100
        if token in ("a", "an"):
            continue  # an article; before a scale word it means one, which `group or 1` below supplies
        if token in _BANKNOTE_SLANG and group == 0:
            group = _BANKNOTE_SLANG[token]
        elif token in _UNIT_WORDS and _UNIT_WORDS.index(token) < 10:
            if below_hundred and (below_hundred < 20 or below_hundred % 10):
                return None  # "twelve three" or "twenty-one two" is not a number
            group += _UNIT_WORDS.index(token)
        elif token in _UNIT_WORDS:
            if below_hundred:
                return None
            group += _UNIT_WORDS.index(token)
        elif token in _TENS_WORDS:
            if below_hundred:
                return None
            group += 10 * _TENS_WORDS.index(token)
        elif token == "hundred":
            if group >= 100:
                return None
            group = (group or 1) * 100
        elif token in _SCALE_WORDS:
            total += (group or 1) * _SCALE_WORDS[token]
            group = 0
        else:
            return None
        said_a_number = True
    return float(total + group) if said_a_number else None
