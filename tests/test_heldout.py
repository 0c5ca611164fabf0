"""neagari.evaluation.heldout.classify on a hand-made passage (PAPER.md §6 item 8): PASS contains
the target and no other passage text; COPY contains other passage text (any 15-character
fragment of the passage minus the target), with or without the target; PARTIAL some 15-character
passage fragment but neither; OTHER none."""

from __future__ import annotations

import pytest

from neagari.evaluation.heldout import classify

BEFORE = "Alpha beta gamma delta epsilon."
TARGET = "The dose is ten milligrams daily."
AFTER = "Zeta eta theta iota kappa."
PASSAGE = f"{BEFORE} {TARGET} {AFTER}"


def test_target_alone_is_pass():
    assert classify(TARGET, TARGET, PASSAGE) == "PASS"
    # wrapping words that are not passage text do not matter
    assert classify(f"Answer: {TARGET} Done.", TARGET, PASSAGE) == "PASS"


def test_target_with_other_passage_text_is_copy():
    # the target is present, but so is the whole following sentence: COPY, not PASS
    assert classify(f"{TARGET} {AFTER}", TARGET, PASSAGE) == "COPY"
    assert classify(PASSAGE, TARGET, PASSAGE) == "COPY"  # the whole passage echoed back
    assert classify(f"{BEFORE} {TARGET}", TARGET, PASSAGE) == "COPY"


def test_other_passage_text_without_the_target_is_copy():
    assert classify(BEFORE, TARGET, PASSAGE) == "COPY"
    # the last 15 characters of AFTER ("eta iota kappa.", the end of "theta iota kappa.") suffice
    assert classify("eta iota kappa.", TARGET, PASSAGE) == "COPY"
    # " iota kappa." is only 12 characters of passage text: no fragment, OTHER
    assert classify("... iota kappa.", TARGET, PASSAGE) == "OTHER"


def test_fragment_length_boundary_is_fifteen_characters():
    # "Zeta eta theta" is 14 characters (4 + 1 + 3 + 1 + 5): no 15-character fragment of the rest
    # of the passage, so target + it is still PASS; one more character of AFTER ("Zeta eta theta ",
    # with its space, is 15) makes it COPY
    assert len("Zeta eta theta") == 14
    assert classify(f"{TARGET} Zeta eta theta", TARGET, PASSAGE) == "PASS"
    assert classify(f"{TARGET} Zeta eta theta i", TARGET, PASSAGE) == "COPY"


def test_part_of_the_target_is_partial():
    # 23 characters of the target: a passage fragment, but not the target and not other text
    assert classify("The dose is ten milligr", TARGET, PASSAGE) == "PARTIAL"
    # 14 characters of the target are below the fragment length: OTHER
    assert classify("The dose is te", TARGET, PASSAGE) == "OTHER"


def test_unrelated_text_is_other():
    assert classify("I do not know.", TARGET, PASSAGE) == "OTHER"
    assert classify("", TARGET, PASSAGE) == "OTHER"


def test_fragments_do_not_span_the_removed_target():
    # "epsilon. The do" (15 chars) straddles BEFORE and the target; it is not "other" text, because
    # the passage minus the target is split where the target was
    assert classify("epsilon. The dose is ten milligrams daily.", TARGET, PASSAGE) == "PASS"


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
