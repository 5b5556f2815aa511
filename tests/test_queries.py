"""Synthetic payment queries: every utterance's ground truth is checked against its own text, with checks
written from the spec (verb cues, amount shapes, name matching) rather than from the generator's tables."""
import dataclasses
import re
import time
import types

import pytest

from helpers.data import queries
from helpers.data.queries import (
    DEFAULT_RECIPIENTS, INTENTS, PURPOSES, REF_KINDS, SLOTS, PaymentQuery, Recipient, generate_queries,
    number_to_words, parse_amount,
)

PEOPLE = {person.full_name: person for person in DEFAULT_RECIPIENTS}

# The verbs the spec asks for (plus a few more the generator offers), as cues in the lowercased text with slots masked.
SEND_CUES = {
    "send": r"\bsend\b", "pay": r"\bpay\b", "shoot over": r"\bshoot\b.*\bover\b", "wire": r"\bwire\b",
    "transfer": r"\btransfer\b", "venmo": r"\bvenmo\b", "zelle": r"\bzelle\b", "give": r"\bgive\b",
    "spot": r"\bspot\b", "ping": r"\bping\b", "hit ... up with": r"\bhit\b.*\bup with\b", "paypal": r"\bpaypal\b",
    "cash app": r"\bcash app\b", "throw": r"\bthrow\b", "front": r"\bfront\b", "toss": r"\btoss\b",
}
REQUEST_CUES = {
    "request": r"\brequest\b", "ask ... for": r"\bask\b.*\bfor\b", "collect": r"\bcollect\b",
    "charge": r"\bcharge\b", "bill": r"\bbill\b", "get ... back": r"\bget\b.*\bback\b", "invoice": r"\binvoice\b",
}
CUES = {"send_money": SEND_CUES, "request_money": REQUEST_CUES}

# Shapes of amount phrases, told apart by their look alone.
AMOUNT_SHAPES = {
    "$50": r"^\$\d+$",
    "$12.50": r"^\$\d[\d,]*\.\d\d$",
    "$1,200": r"^\$\d{1,3}(,\d{3})+(\.\d\d)?$",
    "50 dollars": r"^\d[\d,]*(\.\d\d)? dollars?$",
    "50 bucks": r"^\d[\d,]* bucks?$",
    "75 USD": r"^\d[\d,]*(\.\d\d)? usd$",
    "bare 50": r"^\d[\d,]*$",
    "bare 12.50": r"^\d[\d,]*\.\d\d$",
    "twenty dollars": r"^[a-z]+ dollars?$",
    "forty-five bucks": r"^[a-z]+-[a-z]+ bucks$",
    "a hundred dollars": r"^a hundred( and)?( [a-z-]+)? dollars$",
    "bare words": r"^(?!a )[a-z -]+$",
    "a fiver": r"^a fiver$",
    "a tenner": r"^a tenner$",
    "grand": r"^(a|two) grand$",
    "1.5k": r"^\$?\d+(\.\d)?k$",
    "dollars and cents": r"^\d+ dollars? and \d+ cents?$",
}

NUMBER_WORDS = {"one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
                "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty",
                "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety", "hundred", "thousand"}


@pytest.fixture(scope="module")
def default_queries() -> list[PaymentQuery]:
    return generate_queries()


def masked(query: PaymentQuery) -> str:
    """The lowercased text with the slots blanked out, so a name like "Bill" or a note like "the phone bill"
    can't pass for a verb."""
    text = query.text
    for slot_text in sorted(filter(None, (query.recipient_text, query.amount_text, query.note_text)), key=len,
                            reverse=True):
        text = text.replace(slot_text, " | ")
    return text.lower()


def digits_of(text: str) -> str:
    return re.sub(r"\D", "", text)


def check_ground_truth(query: PaymentQuery, people: dict[str, Recipient]) -> None:
    text = query.text
    assert query.intent in INTENTS, text
    assert query.missing == tuple(slot for slot in SLOTS if slot in query.missing), text
    assert len(set(query.missing)) == len(query.missing), text

    if "recipient" in query.missing:
        assert (query.recipient, query.recipient_ref, query.recipient_text) == (None, None, None), text
    else:
        assert query.recipient_text and query.recipient_text in text, text
        person = people[query.recipient]
        said = query.recipient_text.lower()
        if query.recipient_ref == "name":
            assert said == person.full_name.lower(), text
        elif query.recipient_ref == "first_name":
            assert said == person.full_name.split()[0].lower(), text
        elif query.recipient_ref == "nickname":
            assert person.nickname and said == person.nickname.lower(), text
        else:
            assert query.recipient_ref == "phone", text
            assert re.fullmatch(r"[\d() .-]+", said) and digits_of(said) == digits_of(person.phone_number), text

    if "amount" in query.missing:
        assert (query.amount, query.amount_text) == (None, None), text
    else:
        assert query.amount_text and query.amount_text in text, text
        assert 1 <= query.amount <= 2000 and round(query.amount, 2) == query.amount, text
        parsed = parse_amount(query.amount_text)
        assert parsed is not None and abs(parsed - query.amount) < 0.005, (text, query.amount_text, query.amount)
        said = query.amount_text.lower()
        if re.fullmatch(r"\$?[\d,]+(\.\d\d)?( dollars?| bucks?| usd)?", said):
            # Plain digit forms, read without parse_amount: drop everything but digits and the point.
            assert abs(float(re.sub(r"[^\d.]", "", said)) - query.amount) < 0.005, text
        if not re.search(r"\d", said):
            # Word forms only for whole sums that people would say in words.
            assert query.amount.is_integer() and (query.amount <= 500 or query.amount % 100 == 0), text

    if "note" in query.missing:
        assert (query.note, query.note_text) == (None, None), text
    else:
        assert query.note_text and query.note_text in text, text
        assert query.note_text.lower() == query.note.lower(), text

    blanked = masked(query)
    assert any(re.search(cue, blanked) for cue in CUES[query.intent].values()), text
    if query.intent == "send_money":
        assert not any(re.search(cue, blanked) for cue in REQUEST_CUES.values()), text


def is_single_slip(intended: str, typed: str) -> bool:
    """Whether `typed` is `intended` with two neighbouring letters swapped, one letter dropped or one doubled."""
    slips = set()
    for i in range(len(intended)):
        slips.add(intended[:i] + intended[i + 1:])
        slips.add(intended[:i] + intended[i] + intended[i:])
        if i + 1 < len(intended):
            slips.add(intended[:i] + intended[i + 1] + intended[i] + intended[i + 2:])
    return typed != intended and typed in slips


def test_default_recipients_and_purposes_are_rich_enough():
    assert 35 <= len(DEFAULT_RECIPIENTS) <= 50
    assert sum(person.nickname is not None for person in DEFAULT_RECIPIENTS) >= 25
    assert all(re.fullmatch(r"\d{3}-555-\d{4}", person.phone_number) for person in DEFAULT_RECIPIENTS)
    assert len({person.full_name.split()[0] for person in DEFAULT_RECIPIENTS}) == len(DEFAULT_RECIPIENTS)
    assert len(PURPOSES) >= 30


def test_five_thousand_unique_utterances_deterministic_per_seed(default_queries):
    assert len(default_queries) == 5000
    assert len({query.text for query in default_queries}) == 5000
    assert generate_queries() == default_queries
    other_seed = generate_queries(seed=1)
    assert len(other_seed) == 5000 and other_seed != default_queries
    assert len({query.text for query in default_queries} & {query.text for query in other_seed}) < 100


def test_generating_five_thousand_is_fast():
    start = time.perf_counter()
    generate_queries(seed=7)
    assert time.perf_counter() - start < 2


def test_every_utterance_agrees_with_its_ground_truth(default_queries):
    for query in default_queries:
        check_ground_truth(query, PEOPLE)


def test_the_ground_truth_check_catches_wrong_labels(default_queries):
    complete = next(query for query in default_queries if not query.missing and query.recipient_ref == "name")
    other_person = next(name for name in PEOPLE if name != complete.recipient)
    wrong_intent = "send_money" if complete.intent == "request_money" else "request_money"
    for corrupted in (
        dataclasses.replace(complete, amount=complete.amount + 1),
        dataclasses.replace(complete, recipient=other_person),
        dataclasses.replace(complete, recipient_ref="nickname"),
        dataclasses.replace(complete, note_text=complete.note_text + " x"),
        dataclasses.replace(complete, intent=wrong_intent),
        dataclasses.replace(complete, amount=None, amount_text=None),
    ):
        with pytest.raises(AssertionError):
            check_ground_truth(corrupted, PEOPLE)


@pytest.mark.parametrize("text, dollars", [
    ("$50", 50), ("50 dollars", 50), ("50 bucks", 50), ("$12.50", 12.5), ("12.50", 12.5), ("a tenner", 10),
    ("a fiver", 5), ("twenty dollars", 20), ("forty-five bucks", 45), ("a hundred dollars", 100), ("$1,200", 1200),
    ("75 USD", 75), ("USD 75", 75), ("A TENNER", 10), ("one hundred and twenty dollars", 120),
    ("two hundred fifty-four", 254), ("twelve hundred", 1200), ("a thousand five hundred dollars", 1500),
    ("two grand", 2000), ("a grand", 1000), ("1.5k", 1500), ("$2K", 2000), ("12 dollars and 50 cents", 12.5),
    ("1 dollar and 1 cent", 1.01), ("$1,234.56", 1234.56), ("a buck", 1), ("one dollar", 1), ("a twenty", 20),
    ("$7.00", 7), ("nine hundred ninety-nine", 999),
])
def test_parse_amount_reads_amount_phrases(text, dollars):
    assert parse_amount(text) == pytest.approx(dollars, abs=0.001)


@pytest.mark.parametrize("text", ["", "lunch", "twenty twenty", "five fifty", "thirteen five", "fifty dollars and",
                                  "12 dollars and 150 cents", "Mike", "$", "hundred hundred"])
def test_parse_amount_rejects_what_is_not_an_amount(text):
    assert parse_amount(text) is None


def test_number_words_round_trip_through_parse_amount():
    assert number_to_words(45) == "forty-five" and number_to_words(120) == "one hundred twenty"
    for number in range(0, 10000):
        assert parse_amount(number_to_words(number)) == number, number_to_words(number)


def test_every_amount_shape_ref_kind_intent_and_verb_appears(default_queries):
    amount_texts = [query.amount_text.lower() for query in default_queries if query.amount_text]
    for shape, pattern in AMOUNT_SHAPES.items():
        assert any(re.fullmatch(pattern, said) for said in amount_texts), shape
    spelled = [said for said in amount_texts if not re.search(r"\d", said)]
    assert any(set(re.split(r"[ -]", said)) & NUMBER_WORDS for said in spelled)

    assert {query.recipient_ref for query in default_queries} == set(REF_KINDS) | {None}
    assert {query.intent for query in default_queries} == set(INTENTS)
    for intent, cues in CUES.items():
        texts = [masked(query) for query in default_queries if query.intent == intent]
        for verb, cue in cues.items():
            assert any(re.search(cue, text) for text in texts), (intent, verb)


def test_casing_variants_appear(default_queries):
    texts = [query.text for query in default_queries]
    assert sum(text == text.lower() for text in texts) > 300
    assert 20 < sum(text == text.upper() for text in texts) < 500
    assert sum(text[0].isupper() and text != text.upper() for text in texts) > 2000


def test_missing_details_are_recorded_and_match_the_rate(default_queries):
    with_gap = [query for query in default_queries if query.missing]
    assert abs(len(with_gap) / len(default_queries) - 0.15) < 0.02
    for slot in SLOTS:
        assert any(query.missing == (slot,) for query in with_gap), slot
    assert any(len(query.missing) == 2 for query in with_gap)
    assert not any(query.missing for query in generate_queries(1000, missing_rate=0))
    half = generate_queries(2000, seed=3, missing_rate=0.5)
    assert abs(sum(bool(query.missing) for query in half) / len(half) - 0.5) < 0.05


def test_typos_are_single_slips_outside_the_slots(default_queries):
    with_typos = [query for query in default_queries if query.typos]
    assert 0.08 < len(with_typos) / len(default_queries) <= 0.11
    for query in with_typos:
        for intended, typed in query.typos:
            assert re.fullmatch(r"[A-Za-z]{3,}", intended) and is_single_slip(intended, typed), query.text
            assert re.search(rf"(?<![a-z]){re.escape(typed.lower())}(?![a-z])", masked(query)), query.text
    assert not any(query.typos for query in generate_queries(1000, typo_rate=0))


def test_heavy_typos_never_break_the_slots_or_the_verbs():
    noisy = generate_queries(3000, seed=11, typo_rate=1.0)
    assert sum(bool(query.typos) for query in noisy) > 2500
    for query in noisy:
        check_ground_truth(query, PEOPLE)


def test_custom_recipients_are_only_referred_to_unambiguously():
    people = [Recipient("Sam Lee", "Sammy", "415-555-0100"), Recipient("Sam Ortiz"), Recipient("Cher"),
              Recipient("Ana Silva", "Sammy"), Recipient("Luis Vega", "Lu")]
    generated = generate_queries(1500, seed=5, recipients=people, intents=("request_money",))
    by_name = {person.full_name: person for person in people}
    allowed = {"Sam Lee": {"name", "phone"}, "Sam Ortiz": {"name"}, "Cher": {"name"},
               "Ana Silva": {"name", "first_name"}, "Luis Vega": {"name", "first_name", "nickname"}}
    used: dict[str, set] = {}
    for query in generated:
        assert query.intent == "request_money"
        check_ground_truth(query, by_name)
        if query.recipient:
            used.setdefault(query.recipient, set()).add(query.recipient_ref)
    assert used == allowed


@pytest.mark.parametrize("arguments", [
    {"n": -1}, {"n": 2.5}, {"intents": ()}, {"intents": ("pay_bills",)}, {"missing_rate": 1.5},
    {"typo_rate": -0.1}, {"recipients": []},
])
def test_bad_arguments_are_refused(arguments):
    with pytest.raises(ValueError):
        generate_queries(**{"n": 10, **arguments})


def test_unreachable_count_raises_a_clear_error(monkeypatch):
    class StuckRandom(queries.random.Random):
        """Always draws the first option, so every attempt repeats the same utterance."""

        def random(self):
            return 0.0

        def getrandbits(self, k):
            return 0

    monkeypatch.setattr(queries, "random", types.SimpleNamespace(Random=StuckRandom))
    with pytest.raises(ValueError, match="distinct utterances"):
        generate_queries(2)
