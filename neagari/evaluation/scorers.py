"""Scoring of generated benchmark answers (§6.7): GSM8K, MMLU-Redux, MuSR and a subset of IFEval.

Every public scorer first drops ``<think>`` blocks (:func:`strip_think`), as the paper does, so
raw generations can be passed in. Extractors return None when no answer can be found; a missing
answer scores as wrong.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)


def strip_think(text: str) -> str:
    """``text`` without reasoning blocks, whitespace-stripped.

    Removes every closed ``<think>...</think>``; an unclosed ``<think>`` (generation cut off
    mid-thought) drops everything after it; a stray ``</think>`` (template opened the block in
    the prompt) drops everything before it.
    """
    text = _THINK_BLOCK.sub("", text)
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    if "<think>" in text:
        text = text.split("<think>", 1)[0]
    return text.strip()


# ---------------------------------------------------------------------------- GSM8K

# Thousands-grouped numbers first, so "1,234" is one number but "3,4,5" is three.
_NUMBER = r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|-?\.\d+"
_HASHES = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
_BOXED = re.compile(r"\\boxed\{((?:[^{}]|\{[^{}]*\})*)\}")


def _normalise_number(s: str) -> str:
    """"$1,234.50" -> "1234.5", "18.0" -> "18", "-0" -> "0"."""
    s = s.replace(",", "").replace("$", "").strip()
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    if s.startswith("-"):
        s = "-" + (s[1:].lstrip("0") or "0")
    else:
        s = s.lstrip("0") or "0"
    if s.startswith((".", "-.")):  # ".5" read back with its leading zero
        s = s.replace(".", "0.", 1)
    return "0" if s == "-0" else s


def gsm8k_answer(text: str) -> str | None:
    """The final numeric answer, normalised: the last ``#### N`` if any, else the first number
    in the last ``\\boxed{...}``, else the last number in the text; None if there is none."""
    text = strip_think(text)
    if hashes := _HASHES.findall(text):
        return _normalise_number(hashes[-1])
    for boxed in reversed(_BOXED.findall(text)):
        if m := re.search(_NUMBER, boxed):
            return _normalise_number(m.group(0))
    numbers = re.findall(_NUMBER, text)
    return _normalise_number(numbers[-1]) if numbers else None


def gsm8k_correct(text: str, gold: str | int | float) -> bool:
    """Whether the answer in ``text`` equals ``gold`` (a number, or a GSM8K solution ending in
    ``#### N``) as a decimal value."""
    gold = str(gold)
    gold_answer = gsm8k_answer(gold) if "####" in gold else _normalise_number(gold)
    answer = gsm8k_answer(text)
    if answer is None or gold_answer is None:
        return False
    try:
        return Decimal(answer) == Decimal(gold_answer)
    except InvalidOperation:
        return answer == gold_answer


# ---------------------------------------------------------------------------- multiple choice


def _choice(text: str, labels: str) -> str | None:
    """The chosen label (one character of ``labels``, e.g. "ABCD" or "123") or None.

    In order: the last "answer is X" / "Answer: X" / "answer: (X)"; the last "(X)"; a reply
    that is only the label ("B", "**B**", "B."); a reply opening with "B)" or "B.".
    """
    label = f"[{re.escape(labels)}]"
    patterns = [
        rf"(?i:answer)\s*(?:(?i:is)\s*)?[:\-]?\s*\**\s*\(?({label})\)?(?![\w])",
        rf"\(({label})\)",
        rf"^\W*({label})\W*$",
        rf"^\W*({label})[.)]\s",
    ]
    for pattern in patterns:
        if found := re.findall(pattern, text):
            return found[-1]
    return None


def mmlu_letter(text: str) -> str | None:
    """The option letter A-D chosen in ``text``, or None. Only capital letters count, so the
    article "a" is never read as option A."""
    return _choice(strip_think(text), "ABCD")


def musr_choice(text: str, n_choices: int) -> int | None:
    """The 1-based choice (1..n_choices) in ``text``: "Answer: 2", "(2)", or an option letter
    ("Answer: B" -> 2); None if absent or out of range. Numbers are tried before letters."""
    if not 1 <= n_choices <= 9:
        raise ValueError(f"n_choices must be in 1..9, got {n_choices}")
    text = strip_think(text)
    digit = _choice(text, "".join(str(i) for i in range(1, n_choices + 1)))
    if digit is not None:
        return int(digit)
    letter = _choice(text, "ABCDEFGHI"[:n_choices])
    return None if letter is None else "ABCDEFGHI".index(letter) + 1


# ---------------------------------------------------------------------------- IFEval


def _compare(count: int, relation: str, n: int) -> bool:
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"relation must be 'less than' or 'at least', got {relation!r}")


def _count_sentences(text: str) -> int:
    # A sentence ends at . ! or ? followed by whitespace or the end; a simplification of
    # IFEval's splitter that ignores abbreviations such as "e.g.".
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()])


def _paragraphs_ok(text: str, num_paragraphs: int) -> bool:
    """Paragraphs are separated by ``***``; an empty paragraph is allowed only at either end."""
    parts = re.split(r"\s?\*\*\*\s?", text)
    inner_empty = any(not p.strip() for p in parts[1:-1])
    count = sum(1 for p in parts if p.strip())
    return not inner_empty and count == num_paragraphs


def _json_ok(text: str) -> bool:
    body = text.strip()
    fence = re.fullmatch(r"```(?:json|JSON)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    try:
        json.loads(fence.group(1) if fence else body)
    except ValueError:
        return False
    return True


def _as_list(words: str | list[str]) -> list[str]:
    return [words] if isinstance(words, str) else list(words)


def _postscript_ok(text: str, postscript_marker: str) -> bool:
    # "P.S." also matches "p. s." and "P.S"-style spacing; case is ignored
    marker = postscript_marker.strip().lower()
    pattern = r"\.\s?".join(re.escape(part) for part in marker.split("."))
    return re.search(pattern, text.lower()) is not None


# id -> (check(response, **kwargs), the kwargs it needs)
_IFEVAL: dict[str, tuple[Callable[..., bool], tuple[str, ...]]] = {
    "punctuation:no_comma": (lambda r: "," not in r, ()),
    # str.islower/isupper also demand at least one cased letter, as IFEval does
    "change_case:english_lowercase": (lambda r: r.islower(), ()),
    "change_case:english_capital": (lambda r: r.isupper(), ()),
    "length_constraints:number_words": (
        lambda r, relation, num_words: _compare(len(re.findall(r"\w+", r)), relation, int(num_words)),
        ("relation", "num_words")),
    "length_constraints:number_sentences": (
        lambda r, relation, num_sentences: _compare(_count_sentences(r), relation, int(num_sentences)),
        ("relation", "num_sentences")),
    "length_constraints:number_paragraphs": (
        lambda r, num_paragraphs: _paragraphs_ok(r, int(num_paragraphs)), ("num_paragraphs",)),
    "detectable_format:number_bullet_lists": (
        lambda r, num_bullets: len(re.findall(r"^\s*[*-]\s", r, flags=re.MULTILINE)) == int(num_bullets),
        ("num_bullets",)),
    "detectable_format:json_format": (_json_ok, ()),
    "detectable_format:title": (lambda r: re.search(r"<<[^\n<>]*\S[^\n<>]*>>", r) is not None, ()),
    "keywords:existence": (
        lambda r, keywords: all(k.lower() in r.lower() for k in _as_list(keywords)), ("keywords",)),
    "keywords:forbidden_words": (
        lambda r, forbidden_words: not any(
            re.search(rf"\b{re.escape(w)}\b", r, flags=re.IGNORECASE) for w in _as_list(forbidden_words)),
        ("forbidden_words",)),
    "keywords:frequency": (
        lambda r, keyword, frequency, relation: _compare(
            len(re.findall(re.escape(keyword), r, flags=re.IGNORECASE)), relation, int(frequency)),
        ("keyword", "frequency", "relation")),
    "startend:end_checker": (
        lambda r, end_phrase: r.strip().lower().endswith(end_phrase.strip().lower()), ("end_phrase",)),
    "startend:quotation": (lambda r: len(r.strip()) > 1 and r.strip()[0] == r.strip()[-1] == '"', ()),
    "detectable_content:number_placeholders": (
        lambda r, num_placeholders: len(re.findall(r"\[[^\[\]]*\]", r)) >= int(num_placeholders),
        ("num_placeholders",)),
    "detectable_content:postscript": (_postscript_ok, ("postscript_marker",)),
}
SUPPORTED_IFEVAL_IDS = tuple(sorted(_IFEVAL))


def ifeval_check(instruction_id: str, kwargs: Mapping[str, Any] | None, response: str) -> bool:
    """Whether ``response`` follows one IFEval instruction (strict: the response as given, after
    dropping ``<think>`` blocks). ``kwargs`` are the dataset's, whose null entries (the dataset
    fills every unused key with null) are ignored; ids outside the supported subset raise."""
    if instruction_id not in _IFEVAL:
        raise ValueError(f"unsupported IFEval instruction {instruction_id!r}; "
                         f"supported: {', '.join(SUPPORTED_IFEVAL_IDS)}")
    check, needed = _IFEVAL[instruction_id]
    given = {k: v for k, v in (kwargs or {}).items() if v is not None}
    if missing := [k for k in needed if k not in given]:
        raise ValueError(f"{instruction_id} needs kwargs {missing}, got {sorted(given)}")
    return bool(check(strip_think(response), **{k: given[k] for k in needed}))


def ifeval_prompt_strict(item: Mapping[str, Any], response: str) -> bool:
    """IFEval prompt-level strict accuracy for one item ({"instruction_id_list", "kwargs"}):
    True iff every listed instruction is followed."""
    ids, kwargs = item["instruction_id_list"], item["kwargs"]
    if len(ids) != len(kwargs):
        raise ValueError(f"{len(ids)} instruction ids but {len(kwargs)} kwargs entries")
    return all(ifeval_check(i, kw, response) for i, kw in zip(ids, kwargs))


def exact_match(output: str, answer: str) -> bool:
    """The paper's scoring of our evaluation sets: ``<think>`` blocks dropped, then the output
    equals the answer up to surrounding whitespace."""
    return strip_think(output) == answer.strip()
