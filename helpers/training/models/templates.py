"""Chat templates that mark the assistant's text with `{% generation %}`, for loss on assistant turns only.

TRL's `assistant_only_loss=True` asks the tokenizer for an assistant mask, which the chat template
produces only where it has `{% generation %}` markers. TRL ships marked versions of some templates
(Qwen2.5 among them); SmolLM2's and the tiny model's ChatML are not among them, so they are here.
The marked templates render exactly the same text as the originals.
"""
from __future__ import annotations

from trl.chat_template_utils import get_training_chat_template, has_generation_markers

SMOLLM2_DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml_template(default_system: str | None = None, generation_markers: bool = True) -> str:
    """ChatML; with `default_system`, a system turn is added when the chat has none (SmolLM2 does so).

    The assistant's text and its end-of-turn (`<|im_end|>` and the newline after it) are the generation:
    exactly what a prompt/completion record's completion holds, so both kinds of record put the loss on
    the same tokens.
    """
    system = ""
    if default_system is not None:
        system = ("{% if loop.first and messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\\n" + default_system + "<|im_end|>\\n' }}{% endif %}")
    assistant = "{{ message['content'] + '<|im_end|>' + '\\n' }}"
    if generation_markers:
        assistant = "{% generation %}" + assistant + "{% endgeneration %}"
    return (
        "{% for message in messages %}" + system
        + "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}" + assistant
        + "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


class NoTrainingTemplate(ValueError):
    """A tokenizer's chat template cannot mark assistant turns; the message says what to do."""


def use_training_template(tokenizer) -> str:
    """Give `tokenizer` a chat template with generation markers that renders the same text; returns which.

    A template is recognised by what it renders, not by its source text (the same ChatML is written in
    many ways); TRL's own training templates cover the rest (Qwen2.5, Llama 3, ...).
    """
    template = tokenizer.chat_template
    if template and has_generation_markers(template):
        return "already marked"
    for name, (plain, marked) in _REPLACEMENTS.items():
        if template and _renders_like(tokenizer, plain):
            tokenizer.chat_template = marked
            return name
    try:
        marked = get_training_chat_template(tokenizer)
    except ValueError:
        raise NoTrainingTemplate(
            "This tokenizer's chat template has no {% generation %} markers and TRL has no training version of it: "
            "add the markers around the assistant's text (see helpers/training/models/templates.py), or train on step "
            "records (prompt_style 'compact' or 'seed') instead of episodes.") from None
    if marked is not None:
        tokenizer.chat_template = marked
    return "TRL training template"


_PROBES = [
    [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"},
     {"role": "user", "content": "V"}],
    [{"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}],
]


def _renders_like(tokenizer, candidate: str) -> bool:
    """Whether the tokenizer's template renders the probe chats exactly as `candidate` does."""
    for chat in _PROBES:
        for prompt in (False, True):
            ours = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt)
            theirs = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=prompt,
                                                   chat_template=candidate)
            if ours != theirs:
                return False
    return True


# The unmarked templates we recognise, and their marked twins.
_REPLACEMENTS = {
    "ChatML": (chatml_template(generation_markers=False), chatml_template()),
    "ChatML with SmolLM2's default system turn": (chatml_template(SMOLLM2_DEFAULT_SYSTEM, generation_markers=False),
                                                  chatml_template(SMOLLM2_DEFAULT_SYSTEM)),
}
