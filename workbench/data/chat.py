"""Chat prompts for instruction-tuned models, built from the tokenizer's own chat template."""
from __future__ import annotations

from typing import Iterable


def chat_messages(user: str, system: str | None = None, history: Iterable[tuple[str, str]] = ()) -> list[dict]:
    """Messages in the HF chat format: an optional system turn, earlier (user, assistant) turns, a user turn."""
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in history:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user})
    return messages


def chat_prompt(model_or_tokenizer, user: str | list[dict], system: str | None = None,
                add_generation_prompt: bool = True) -> str:
    """The text to feed a chat model: the tokenizer's chat template applied to the messages.

    Pass the result to ``model.generate(..., prepend_bos=False)`` / ``model.to_tokens(..., prepend_bos=False)``:
    the template already starts with the special tokens the model expects.
    """
    tokenizer = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "this tokenizer")
        raise ValueError(
            f"{name} has no chat template: it is a base model. Use a chat model such as "
            "'smollm2-135m-instruct', or build the prompt text yourself."
        )
    messages = user if isinstance(user, list) else chat_messages(user, system)
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
