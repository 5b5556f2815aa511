"""The decoder: the same logits as transformers, the same greedy tokens as `generate`, exact sampling, kept caches."""
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, set_seed

from helpers.agent.decoding import (ROW_GROUP, SAMPLED_DRAFT_TOKENS, Decoder, DecoderWeights, JsonEnd, KVBlock,
                                    TokenText, _Drafts, _Row, forward)
from helpers.agent.generation import json_object_closed

VOCAB = 97


def tiny(kind: str, seed: int = 0):
    set_seed(seed)
    common = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=48, max_position_embeddings=512, tie_word_embeddings=kind == "qwen2",
                  pad_token_id=0, eos_token_id=1, bos_token_id=None)
    model = (Qwen2ForCausalLM(Qwen2Config(**common)) if kind == "qwen2"
             else LlamaForCausalLM(LlamaConfig(rope_theta=100000.0, **common)))
    with torch.no_grad():  # large weights: sharp distributions, replies that differ from one context to another
        for parameter in model.parameters():
            parameter.normal_(0, 0.5)
    return model.eval()


def prompts(count: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(2, VOCAB) for _ in range(rng.randint(3, 40))] for _ in range(count)]


def plain_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=1,
                         pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_the_decoder_computes_the_logits_of_transformers(kind):
    model = tiny(kind)
    weights = DecoderWeights.from_model(model)
    ids = torch.tensor(prompts(3, seed=1)[0])[None]
    cache = KVBlock(weights, 1, ids.shape[1] + 4)
    ours = forward(weights, cache, ids, torch.tensor([0]))
    torch.testing.assert_close(ours, model(ids).logits.float(), rtol=1e-4, atol=1e-4)
    # the same positions read in two pieces, the second from the cache the first wrote
    cache = KVBlock(weights, 1, ids.shape[1] + 4)
    forward(weights, cache, ids[:, :5], torch.tensor([0]), logits=False)
    torch.testing.assert_close(forward(weights, cache, ids[:, 5:], torch.tensor([5])), ours[:, 5:], rtol=1e-4,
                               atol=1e-4)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("drafts", [0, 4])
def test_greedy_replies_are_those_of_plain_generate_token_for_token(kind, drafts):
    model = tiny(kind, seed=2)
    batch = prompts(9, seed=3)
    # repeated spans give the draft look-up something to find
    batch += [p + p[:6] + p for p in batch[:3]]
    decoder = Decoder(model, [1], max_new_tokens=12, batch_size=5, draft_tokens=drafts)
    replies = decoder.generate(batch)
    assert replies == [plain_greedy(model, p, 12) for p in batch]
    assert decoder.stats.tokens_written == sum(len(r) for r in replies)
    if drafts:
        assert decoder.stats.accepted > 0  # some drafts were right, so some steps wrote several tokens
        # the same prompts with every row drafting in full: the same replies, more tokens drafted, since this
        # random model rejects many drafts and the rows that see it propose fewer
        always = Decoder(model, [1], max_new_tokens=12, batch_size=5, draft_tokens=drafts, draft_keep=0.0)
        assert always.generate(batch) == replies
        assert always.stats.drafted > decoder.stats.drafted


def test_a_block_of_many_rows_of_very_different_lengths_replies_as_plain_generate():
    # more rows than attend together in one group (ROW_GROUP), so each group reads its own span of the cache
    model = tiny("llama", seed=13)
    rng = random.Random(14)
    batch = [[rng.randrange(2, VOCAB) for _ in range(rng.choice([3, 20, 60, 150]))] for _ in range(2 * ROW_GROUP + 3)]
    decoder = Decoder(model, [1], max_new_tokens=10, batch_size=64, draft_tokens=3)
    assert decoder.generate(batch) == [plain_greedy(model, p, 10) for p in batch]
    # a second call of fewer rows reuses the decoder's cache memory and still replies from scratch
    memory = decoder.pool.keys[0]
    assert decoder.generate(batch[:5]) == [plain_greedy(model, p, 10) for p in batch[:5]]
    assert decoder.pool.keys[0] is memory


def test_a_continued_conversation_reads_only_its_new_tokens_and_replies_as_from_scratch():
    model = tiny("llama", seed=4)
    decoder = Decoder(model, [1], max_new_tokens=8, draft_tokens=2)
    first = prompts(4, seed=5)
    replies = decoder.generate(first)
    followed = [p + r + [7, 8, 9] for p, r in zip(first, replies)]
    read_before = decoder.stats.tokens_read
    again = decoder.generate(followed)
    assert decoder.stats.tokens_read - read_before <= 4 * 4  # the three new tokens and the reply's last, per chat
    assert decoder.stats.tokens_reused >= sum(len(p) for p in first)
    assert again == [plain_greedy(model, p, 8) for p in followed]


def test_rows_of_one_call_that_share_a_beginning_read_it_once_and_reply_as_from_scratch():
    model = tiny("qwen2", seed=10)
    system = prompts(1, seed=11)[0] * 2  # a long common beginning, as a system prompt
    tails = prompts(5, seed=12)
    episode = system + tails[0]
    # a chat and its later steps, a group of identical rollouts, and chats that share only the beginning
    batch = [episode, episode + tails[1], episode + tails[1] + tails[2], system + tails[3], system + tails[4]]
    batch += [system + tails[3]] * 3
    decoder = Decoder(model, [1], max_new_tokens=8, draft_tokens=2, batch_size=16)
    replies = decoder.generate(batch)
    assert replies == [plain_greedy(model, p, 8) for p in batch]
    # each chat's prompt but its last token is read or copied; what is copied is not read
    prompt_tokens = sum(len(p) - 1 for p in batch)
    assert decoder.stats.tokens_read + decoder.stats.tokens_shared == prompt_tokens
    unique = len(system) + sum(len(t) for t in tails) - 1
    assert decoder.stats.tokens_read <= unique + len(batch)  # the last token of a prompt is read as the first step


def test_rows_that_read_very_different_amounts_share_a_block():
    # one conversation goes on with a token or two, another starts with a long prompt: the short row's
    # padding in the shared prefill pass must not run past its cache
    model = tiny("llama", seed=7)
    decoder = Decoder(model, [1], max_new_tokens=6, draft_tokens=2, batch_size=8)
    short = prompts(1, seed=8)[0][:4]
    first = decoder.generate([short])[0]
    batch = [short + first + [9], prompts(1, seed=9)[0] * 6]
    assert decoder.generate(batch) == [plain_greedy(model, p, 6) for p in batch]


def test_sampling_follows_the_models_distribution_with_and_without_drafts():
    model = tiny("qwen2", seed=6)

    def next_token(prompt):
        with torch.no_grad():
            return torch.softmax(model(torch.tensor([prompt])).logits[0, -1].float() / 0.8, -1)

    # a prompt [a, b, a] makes the look-up draft b; choose one where b is neither sure nor rare, so that the
    # draft is accepted in some samples and rejected in others
    prompt, expected = next(([a, b, a], p) for a in range(2, VOCAB) for b in range(2, VOCAB)
                            if 0.2 < (p := next_token([a, b, a]))[b] < 0.8)
    for drafts in (0, 3):
        decoder = Decoder(model, [1], max_new_tokens=1, draft_tokens=drafts, batch_size=500)
        generator = torch.Generator().manual_seed(drafts)
        firsts = [r[0] for r in decoder.generate([prompt] * 4000, temperature=0.8, generator=generator)]
        observed = torch.bincount(torch.tensor(firsts), minlength=VOCAB).float() / len(firsts)
        # total variation distance between the sampled and the true distribution; 4000 draws keep noise near 0.02
        assert 0.5 * (observed - expected).abs().sum() < 0.06, drafts
    assert decoder.stats.drafted > 0 and 0 < decoder.stats.accepted < decoder.stats.drafted
    # sampled replies draft at most SAMPLED_DRAFT_TOKENS a step (one step per prompt here), whatever draft_tokens says
    assert decoder.stats.drafted <= SAMPLED_DRAFT_TOKENS * 4000


def test_replies_stop_at_the_end_of_their_json_object():
    class Characters:  # a tokenizer whose ids are the characters of a small alphabet
        alphabet = '\x00\x01{}"ab :\\'
        all_special_ids = [0, 1]

        def decode(self, ids):
            return "".join(self.alphabet[i] for i in ids)

    text = TokenText(Characters())
    tracker = JsonEnd()
    reply = '{"a": "}b\\"}"} :'
    closed_at = next(i for i in range(len(reply) + 1) if json_object_closed(reply[:i]))
    fed = [tracker.feed(char) for char in reply]
    assert fed.index(True) == closed_at - 1
    assert text(0) == "" and text(2) == "{"


def test_drafts_continue_the_latest_earlier_occurrence():
    drafts = _Drafts([1, 2, 3, 4, 9, 1, 2, 3, 5, 8, 1, 2, 3])
    assert drafts.propose(2) == [5, 8]  # after the latest "1 2 3" came 5, 8
    drafts.append(5)
    assert drafts.propose(3) == [8, 1, 2]


def test_greedy_rows_draft_by_their_own_acceptance():
    length = Decoder._draft_length
    fresh = _Row(0, [5])
    assert length(fresh, 8, 0.0, (0, 0), keep=0.25) == 6  # the prior rate 0.8: 0.8 ** 6 >= 0.25 > 0.8 ** 7
    assert length(fresh, 4, 0.0, (0, 0), keep=0.5) == 3  # 0.8 ** 3 >= 0.5 > 0.8 ** 4
    assert length(fresh, 2, 0.0, (0, 0), keep=0.25) == 2  # never beyond the cap
    assert length(_Row(0, [5], accepted=40, rejected=0), 4, 0.0, (0, 0), keep=0.5) == 4
    assert length(_Row(0, [5], accepted=0, rejected=20), 4, 0.0, (0, 0), keep=0.25) == 0
    # a call whose drafts are mostly rejected makes its new rows cautious too
    assert length(fresh, 4, 0.0, (5, 40), keep=0.25) == 0
    assert length(_Row(0, [5], accepted=0, rejected=20), 1, 0.7, (0, 40)) == 1  # sampling keeps its fixed length
    assert length(_Row(0, [5], accepted=0, rejected=20), 4, 0.0, (0, 40), keep=0.0) == 4  # keep 0: always the cap


def test_an_architecture_it_does_not_know_is_refused_with_a_sentence():
    class Other(torch.nn.Module):
        config = type("Config", (), {"model_type": "gpt2"})()

    assert DecoderWeights.from_model(Other()) is None
    with pytest.raises(ValueError, match="generate"):
        Decoder(Other(), [1])
