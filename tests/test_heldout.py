"""neagari.evaluation.heldout.classify (PAPER.md §6 item 8) under upstream's rule: the output and
the passage stripped; the passage minus the target = the passage with every occurrence of the
target replaced by nothing, stripped; 15-character fragments at every offset; tested in the order
PASS (target, no other passage text), COPY (other passage text), PARTIAL (any passage fragment),
OTHER. Every expected class below is worked out by hand from that rule."""

from __future__ import annotations

import pytest

from neagari.evaluation.heldout import classify

BEFORE = "Alpha beta gamma delta epsilon."
TARGET = "The dose is ten milligrams daily."
AFTER = "Zeta eta theta iota kappa."
PASSAGE = f"{BEFORE} {TARGET} {AFTER}"
# The passage minus the target: both spaces that flanked it stay, so BEFORE and AFTER are joined by
# two spaces, and the space before "Zeta" is other passage text.
REST = "Alpha beta gamma delta epsilon.  Zeta eta theta iota kappa."


def test_the_passage_minus_the_target_is_written_out_right():
    assert PASSAGE.replace(TARGET, "").strip() == REST


def test_target_alone_is_pass():
    assert classify(TARGET, TARGET, PASSAGE) == "PASS"
    # wrapping words that are not passage text do not matter
    assert classify(f"Answer: {TARGET} Done.", TARGET, PASSAGE) == "PASS"


def test_target_with_other_passage_text_is_copy():
    # PASS is tested first but needs "no other passage text": with the following sentence, COPY
    assert classify(f"{TARGET} {AFTER}", TARGET, PASSAGE) == "COPY"
    assert classify(PASSAGE, TARGET, PASSAGE) == "COPY"  # the whole passage echoed back
    assert classify(f"{BEFORE} {TARGET}", TARGET, PASSAGE) == "COPY"


def test_copy_against_other_at_fifteen_characters_of_other_text():
    assert classify(BEFORE, TARGET, PASSAGE) == "COPY"
    # "eta iota kappa." is the last 15 characters of REST
    assert len("eta iota kappa.") == 15
    assert classify("eta iota kappa.", TARGET, PASSAGE) == "COPY"
    # one character less: no 15-character string at all, so no fragment of anything: OTHER
    assert classify("ta iota kappa.", TARGET, PASSAGE) == "OTHER"


def test_pass_against_copy_at_fifteen_characters_after_the_target():
    # After the target the output holds " Zeta eta thet": the space is REST's (the second of the two
    # that meet where the target was), so that is 14 characters of other text. The 15-character
    # windows that reach back into the target (". Zeta eta thet", ...) are not in REST, which has
    # two spaces after "epsilon." and none after "daily.": PASS
    assert len(" Zeta eta thet") == 14
    assert classify(f"{TARGET} Zeta eta thet", TARGET, PASSAGE) == "PASS"
    # " Zeta eta theta" is 15 characters of REST: COPY
    assert classify(f"{TARGET} Zeta eta theta", TARGET, PASSAGE) == "COPY"


def test_partial_against_other_at_fifteen_characters_of_the_target():
    # 15 characters of the target: a passage fragment, not the target, not REST text: PARTIAL
    assert len("The dose is ten") == 15
    assert classify("The dose is ten", TARGET, PASSAGE) == "PARTIAL"
    assert classify("The dose is te", TARGET, PASSAGE) == "OTHER"


def test_pass_against_partial_at_the_whole_target():
    # the target less its final period is no longer the target, but holds passage fragments
    assert classify(TARGET[:-1], TARGET, PASSAGE) == "PARTIAL"
    assert classify(TARGET, TARGET, PASSAGE) == "PASS"


def test_copy_against_partial_where_a_fragment_straddles_the_target():
    # "daily. Zeta eta" (15) is passage text across the target's end: in REST "daily." is gone, so
    # only " Zeta eta" (9 characters) is other text: PARTIAL, not COPY
    assert classify("daily. Zeta eta", TARGET, PASSAGE) == "PARTIAL"


def test_unrelated_text_is_other():
    assert classify("I do not know.", TARGET, PASSAGE) == "OTHER"
    assert classify("", TARGET, PASSAGE) == "OTHER"
    assert classify("  \n", TARGET, PASSAGE) == "OTHER"


def test_the_output_is_stripped_before_it_is_matched():
    # a leading space is not matched: " Zeta eta theta" strips to 14 characters, so no fragment
    assert classify(" Zeta eta theta", TARGET, PASSAGE) == "OTHER"
    assert classify(f"\n  {TARGET}\n", TARGET, PASSAGE) == "PASS"


def test_the_passage_is_stripped_before_its_fragments_are_taken():
    # "\n\nThe dose is t" is 15 characters of the unstripped passage but not of the stripped one;
    # the output's passage text "The dose is t" is 13 characters: OTHER
    passage = f"\n\n{TARGET} {AFTER}"
    assert classify("A:\n\nThe dose is t", TARGET, passage) == "OTHER"


# upstream's held-out probe heldout_log_tls_mismatch (probes/probes_verbatim_heldout.json)
LOG_PASSAGE = ("[2026-02-14 04:45:50] INFO: Incoming TLS handshake from 198.51.100.12\n"
               "[2026-02-14 04:45:50] WARN: TLS handshake rejected because client offered only TLS 1.0 and the "
               "server requires 1.2 or later\n"
               "[2026-02-14 04:45:50] INFO: Connection closed with alert code 70")
LOG_TARGET = "TLS handshake rejected because client offered only TLS 1.0 and the server requires 1.2 or later"


def test_log_answer_with_a_leading_space_is_pass():
    # Stripped, the output is the target exactly. The longest run the target shares with the rest
    # of the log is "TLS handshake " (14 characters, from "Incoming TLS handshake from"); only
    # the output's own leading space would make it 15 (" TLS handshake "), and stripping drops it
    assert len("TLS handshake ") == 14
    assert classify(f" {LOG_TARGET}", LOG_TARGET, LOG_PASSAGE) == "PASS"
    assert classify(LOG_TARGET, LOG_TARGET, LOG_PASSAGE) == "PASS"


# upstream's held-out probes heldout_code_typed_dict and heldout_code_func_cache
TYPED_PASSAGE = ("from typing import TypedDict, Optional\n\nclass UserProfile(TypedDict):\n    user_id: str\n"
                 "    display_name: str\n    email: Optional[str]\n    created_at: str")
TYPED_TARGET = "class UserProfile(TypedDict):"
CACHE_PASSAGE = ("from functools import lru_cache\n\n@lru_cache(maxsize=128)\n"
                 "def compute_hash(data: bytes, algorithm: str = 'sha256') -> str:\n"
                 '    """Hash data with the specified algorithm."""\n    import hashlib\n'
                 "    return hashlib.new(algorithm, data).hexdigest()")
CACHE_TARGET = "def compute_hash(data: bytes, algorithm: str = 'sha256') -> str:"


def test_code_answer_with_the_next_indented_line_is_copy():
    # The rest keeps "\n    user_id: str" where the class line was removed; the output holds
    # "\n    user_id: s" = newline + 4 spaces + 10 characters = 15 of it: COPY
    assert "\n    user_id: s" in TYPED_PASSAGE.replace(TYPED_TARGET, "").strip()
    assert len("\n    user_id: s") == 15
    assert classify(f"{TYPED_TARGET}\n    user_id: str", TYPED_TARGET, TYPED_PASSAGE) == "COPY"
    assert classify(TYPED_TARGET, TYPED_TARGET, TYPED_PASSAGE) == "PASS"


def test_code_answer_of_one_indented_other_line_is_other():
    # "    import hashlib" strips to "import hashlib", 14 characters: no fragment of anything
    assert classify("    import hashlib", CACHE_TARGET, CACHE_PASSAGE) == "OTHER"
    # with its return line it is other passage text: COPY
    assert classify("import hashlib\n    return hashlib", CACHE_TARGET, CACHE_PASSAGE) == "COPY"


def test_fragments_may_span_the_removed_target():
    # REST is one string: "epsilon.  Zeta " (8 + 2 + 5 = 15 characters) runs across the place the
    # target was, so an output that closes the gap is COPY
    assert classify("epsilon.  Zeta eta", TARGET, PASSAGE) == "COPY"
    # "epsilon. The do" straddles BEFORE and the target; REST has no "epsilon. T": PASS
    assert classify("epsilon. The dose is ten milligrams daily.", TARGET, PASSAGE) == "PASS"


def test_every_occurrence_of_the_target_is_removed():
    # a passage naming the target twice: REST is AFTER alone, so the target twice over is PASS
    passage = f"{TARGET} {AFTER} {TARGET}"
    assert classify(f"{TARGET} {TARGET}", TARGET, passage) == "PASS"
    assert classify(passage, TARGET, passage) == "COPY"


def test_other_text_under_fifteen_characters_has_no_fragment():
    # REST = "Ok.": no 15-character fragment, so even the whole passage echoed back is PASS
    passage = f"{TARGET} Ok."
    assert classify(passage, TARGET, passage) == "PASS"


def test_target_at_either_end_of_the_passage():
    opening = f"{TARGET} {AFTER}"
    assert classify(TARGET, TARGET, opening) == "PASS"
    assert classify(opening, TARGET, opening) == "COPY"
    closing = f"{BEFORE} {TARGET}"
    assert classify(TARGET, TARGET, closing) == "PASS"
    assert classify(closing, TARGET, closing) == "COPY"


def test_target_must_be_in_the_passage():
    with pytest.raises(ValueError, match="not part of the passage"):
        classify(TARGET, "Not in there.", PASSAGE)
