"""neagari.evaluation.scorers on hand-written model outputs, right and wrong."""

from __future__ import annotations

import pytest

from neagari.evaluation import scorers


# ---------------------------------------------------------------------------- think blocks


@pytest.mark.parametrize("text, expected", [
    ("<think>2+2 is 5?</think>\n\nThe answer is 4.", "The answer is 4."),
    ("<think>a</think> one <think>b</think> two", "one  two"),
    ("<think>\nstill reasoning when the token limit hit", ""),  # unterminated
    ("the template opened it</think>Final: 7", "Final: 7"),     # opening tag was in the prompt
    ("no reasoning at all", "no reasoning at all"),
])
def test_strip_think(text, expected):
    assert scorers.strip_think(text) == expected


# ---------------------------------------------------------------------------- GSM8K


@pytest.mark.parametrize("text, expected", [
    ("She pays 3 * 6 = 18 dollars.\n#### 18", "18"),
    ("Total is 1,234 apples, #### $1,234.00", "1234"),
    ("So the final answer is \\boxed{72}.", "72"),
    ("We get \\boxed{\\$1,080} in the end, and 5 more words", "1080"),
    ("First 12, then 7, so the answer is 19.", "19"),
    ("It costs $5.50 each.", "5.5"),
    ("The temperature fell to -3 degrees.", "-3"),
    ("<think>maybe 40</think>The answer is 42", "42"),
    ("I cannot tell.", None),
])
def test_gsm8k_answer(text, expected):
    assert scorers.gsm8k_answer(text) == expected


def test_gsm8k_answer_prefers_hashes_over_boxed_over_last_number():
    assert scorers.gsm8k_answer("\\boxed{3} #### 4 then 5") == "4"
    assert scorers.gsm8k_answer("\\boxed{3} then 5") == "3"


def test_gsm8k_correct():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"
    assert scorers.gsm8k_correct("48 + 24 = 72. #### 72", gold)
    assert scorers.gsm8k_correct("The answer is 72.0", "72")
    assert scorers.gsm8k_correct("\\boxed{1,000}", 1000)
    assert not scorers.gsm8k_correct("The answer is 71", gold)
    assert not scorers.gsm8k_correct("no idea", gold)
    # a number inside the thinking does not count
    assert not scorers.gsm8k_correct("<think>72</think>I am not sure.", "72")


# ---------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize("text, expected", [
    ("Answer: B", "B"),
    ("**Answer:** C", "C"),
    ("The answer is D.", "D"),
    ("After weighing the options, (C) fits best.", "C"),
    ("B", "B"),
    ("**A**", "A"),
    ("B) Paris is the capital", "B"),
    ("<think>Answer: A</think>The answer is (B)", "B"),
    ("The answer is a bit unclear to me.", None),   # the article "a" is not option A
    ("Answer: Because of gravity", None),           # "B" of a word is not option B
    ("I would rather not say.", None),
])
def test_mmlu_letter(text, expected):
    assert scorers.mmlu_letter(text) == expected


@pytest.mark.parametrize("text, n, expected", [
    ("Answer: 2", 3, 2),
    ("The murderer is most likely (3).", 3, 3),
    ("Answer: B", 3, 2),
    ("(A)", 2, 1),
    ("2", 2, 2),
    ("Answer: 4", 3, None),      # out of range
    ("Answer: C", 2, None),      # letter out of range
    ("Answer: 12", 3, None),     # not a single choice
    ("I cannot decide.", 3, None),
])
def test_musr_choice(text, n, expected):
    assert scorers.musr_choice(text, n) == expected


# ---------------------------------------------------------------------------- IFEval


CASES = [
    # (instruction_id, kwargs, response, followed)
    ("punctuation:no_comma", {}, "No commas here at all.", True),
    ("punctuation:no_comma", {}, "Well, here is one.", False),
    ("change_case:english_lowercase", {}, "all lower case, 123.", True),
    ("change_case:english_lowercase", {}, "One capital.", False),
    ("change_case:english_capital", {}, "ALL CAPS, 42!", True),
    ("change_case:english_capital", {}, "ALMOST all caps", False),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "Four words are here.", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "Four words are here.", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 4}, "Four words are here.", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "Four words are here.", False),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3},
     "One. Two! Three?", True),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "One. Two! Three?", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\nSecond.\n***\nThird.", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}, "First.\n***\nSecond.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "First.\n***\n***\nSecond.", False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "Intro:\n* one\n- two\nBye", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}, "Intro:\n* one\n- two\n**bold**", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '{"a": 1}', True),
    ("detectable_format:json_format", {}, "Here you go: {a: 1}", False),
    ("detectable_format:title", {}, "<<Ode to Bits>>\nSigns flip.", True),
    ("detectable_format:title", {}, "<< >>\nNo title inside.", False),
    ("keywords:existence", {"keywords": ["bits", "XOR"]}, "We xor the bits.", True),
    ("keywords:existence", {"keywords": ["bits", "scale"]}, "We xor the bits.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "A category error.", True),
    ("keywords:forbidden_words", {"forbidden_words": ["cat"]}, "The Cat sat.", False),
    ("keywords:frequency", {"keyword": "flip", "frequency": 2, "relation": "at least"}, "Flip, flip!", True),
    ("keywords:frequency", {"keyword": "flip", "frequency": 2, "relation": "less than"}, "Flip, flip!", False),
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, "Done. is there anything else? ", True),
    ("startend:end_checker", {"end_phrase": "Is there anything else?"}, "Is there anything else? Yes.", False),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', True),
    ("startend:quotation", {}, '"Only opened.', False),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "Dear [name], at [address].", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 3}, "Dear [name], at [address].", False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Letter body.\n\np. s. see you", True),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Body.\nP.P.S More.", True),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Letter body without one.", False),
]


@pytest.mark.parametrize("instruction_id, kwargs, response, followed", CASES)
def test_ifeval_check(instruction_id, kwargs, response, followed):
    assert scorers.ifeval_check(instruction_id, kwargs, response) is followed


def test_every_supported_id_has_a_positive_and_a_negative_case():
    for iid in scorers.SUPPORTED_IFEVAL_IDS:
        outcomes = {followed for i, _, _, followed in CASES if i == iid}
        assert outcomes == {True, False}, iid


def test_ifeval_ignores_null_kwargs_and_think_blocks():
    # the HF dataset fills every unused kwarg with null
    kwargs = {"num_words": 3, "relation": "less than", "keywords": None, "end_phrase": None}
    assert scorers.ifeval_check("length_constraints:number_words", kwargs, "<think>a b c d e</think>Two words")


def test_ifeval_unknown_id_lists_the_supported_ones():
    with pytest.raises(ValueError, match="supported: .*punctuation:no_comma"):
        scorers.ifeval_check("language:response_language", {"language": "fr"}, "Bonjour")


def test_ifeval_missing_kwarg_and_bad_relation_raise():
    with pytest.raises(ValueError, match="num_words"):
        scorers.ifeval_check("length_constraints:number_words", {"relation": "at least"}, "x")
    with pytest.raises(ValueError, match="relation"):
        scorers.ifeval_check("length_constraints:number_words", {"relation": "exactly", "num_words": 1}, "x")


def test_ifeval_prompt_strict():
    item = {"instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
            "kwargs": [{}, {}]}
    assert scorers.ifeval_prompt_strict(item, "all lower and no commas")
    assert not scorers.ifeval_prompt_strict(item, "all lower, but a comma")
    assert not scorers.ifeval_prompt_strict(item, "No comma but a capital")
    with pytest.raises(ValueError, match="kwargs"):
        scorers.ifeval_prompt_strict({"instruction_id_list": ["punctuation:no_comma"], "kwargs": []}, "x")
