"""Prompts as the model sees them: chat or plain templates, token ids, answer-letter tokens."""

from __future__ import annotations

from repe_tradeoff.errors import RepeTradeoffError

TEMPLATES = ("auto", "chat", "plain")
PLAIN_TEMPLATE = "User: {prompt}\nAssistant:"
CLOZE_TEMPLATE = "Question: {question}\nAnswer:"
LETTER_TEMPLATE = (
    "The following is a multiple choice question{about}.\n\n{question}\n{options}\nAnswer:"
)


class TaskError(RepeTradeoffError):
    """A task that cannot be scored with the given model or settings."""


def format_prompt(tokenizer, text: str, template: str = "auto") -> tuple[str, bool]:
    """The prompt as the model sees it, and whether it is a chat prompt.

    ``auto`` uses the tokenizer's own chat template when it has one, else the plain
    ``User: …\\nAssistant:`` template; ``chat``/``plain`` force one or the other.
    """
    if template not in TEMPLATES:
        raise TaskError(f"template {template!r} is not one of {', '.join(TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    if template == "chat" and not has_chat:
        raise TaskError("template 'chat' needs a tokenizer with a chat template; use 'plain' for base models")
    if template == "chat" or (template == "auto" and has_chat):
        messages = [{"role": "user", "content": text}]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return PLAIN_TEMPLATE.format(prompt=text), False


def encode(tokenizer, text: str, *, special: bool) -> list[int]:
    return list(tokenizer(text, add_special_tokens=special)["input_ids"])


def letter_token_ids(tokenizer, letter: str) -> list[int]:
    """The single tokens that spell ``letter`` (with or without a leading space).

    Leading tokens that decode to whitespace only (a bare space or "▁") are dropped, so
    SentencePiece's ``["▁", "A"]`` yields ``"A"``; a multi-token letter is not used.
    """
    found: list[int] = []
    for text in (letter, " " + letter):
        ids = encode(tokenizer, text, special=False)
        while ids and not tokenizer.decode([ids[0]]).strip():
            ids = ids[1:]
        if len(ids) == 1 and tokenizer.decode(ids).strip() == letter and ids[0] not in found:
            found.append(ids[0])
    if not found:
        raise TaskError(f"the tokenizer has no single token for the answer letter {letter!r}; use --format cloze")
    return found
