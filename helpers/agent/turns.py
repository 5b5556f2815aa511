"""A chat as token ids, turn by turn, exactly as the chat template lays it out.

A multi-turn rollout keeps the ids the model wrote (decoding them and tokenizing the text again can give
other ids) and appends, after each reply, the ids of what the world answers: the template's text after
the reply's end-of-turn token, the new messages, and the opening of the next assistant turn. Those ids
are tokenized from text, like the whole chat would be: special tokens split a text into pieces that are
tokenized on their own, so the pieces join exactly as in the tokenization of the whole rendered chat.
"""
from __future__ import annotations


class TurnTokens:
    """Token ids of a chat's opening and of the turns that follow each of the model's replies."""

    _PROBE = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
              {"role": "assistant", "content": "R"}]

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.end_of_turn = tokenizer.eos_token_id
        rendered = tokenizer.apply_chat_template(self._PROBE, tokenize=False)
        marker = "R" + tokenizer.eos_token
        if marker not in rendered:
            raise ValueError("The chat template does not end an assistant turn with the tokenizer's end-of-turn token: "
                             "multi-turn rollouts need a template that does (ChatML, Qwen2.5, SmolLM2 do).")
        # the text up to the reply's end-of-turn token; what the template adds after it belongs to the next turn
        self._reply_end = rendered.index(marker) + len(marker)
        self._head = rendered[:self._reply_end]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def opening(self, messages: list[dict]) -> list[int]:
        """The ids of `messages` rendered with the generation prompt: what the model's first reply follows."""
        return self._ids(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    def after_reply(self, messages: list[dict]) -> list[int]:
        """The ids that follow a reply's end-of-turn token when `messages` come next, up to the next reply."""
        rendered = self.tokenizer.apply_chat_template(self._PROBE + list(messages), tokenize=False,
                                                      add_generation_prompt=True)
        if not rendered.startswith(self._head):
            raise ValueError("The chat template renders earlier turns differently once more turns follow.")
        return self._ids(rendered[self._reply_end:])
