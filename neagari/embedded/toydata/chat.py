"""ChatML rendering with thinking disabled, as Qwen3's chat template does for `enable_thinking=False`."""

from __future__ import annotations

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Greedy generation for a chat prompt stops at the end-of-turn marker.
CHAT_STOP = IM_END
# What the assistant turn opens with before its answer when thinking is disabled.
GENERATION_PROMPT = f"{IM_START}assistant\n<think>\n\n</think>\n\n"


def render_chat(system: str | None, user: str, answer: str | None = None) -> str:
    """Render one system + user (+ assistant) exchange as ChatML text.

    With `answer=None` the text ends with the generation prompt (after `</think>\\n\\n`), which is
    exactly where the model's answer begins; otherwise the answer and its `<|im_end|>\\n` follow.
    A `system` of None or "" leaves the system turn out, as Qwen3's template does.
    """
    parts = []
    if system:
        parts.append(f"{IM_START}system\n{system}{IM_END}\n")
    parts.append(f"{IM_START}user\n{user}{IM_END}\n")
    parts.append(GENERATION_PROMPT)
    if answer is not None:
        parts.append(f"{answer}{IM_END}\n")
    return "".join(parts)
