"""tests/mutants.py stays usable: every planted bug still matches the code exactly once (a rename in
the package would otherwise silently retire a mutant), and each names tests that exist."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutants  # noqa: E402


@pytest.mark.parametrize("m", mutants.MUTANTS, ids=lambda m: m.name)
def test_mutant_applies_to_the_current_code(m):
    text = (mutants.REPO / m.path).read_text()
    assert text.count(m.original) == 1, f"{m.name}: its original text occurs {text.count(m.original)} times in {m.path}"
    assert m.mutated != m.original
    files = [t.split("::")[0] for t in m.tests if t.startswith("tests/")]
    assert files, f"{m.name}: names no test file"
    for path in files:
        assert (mutants.REPO / path).is_file(), f"{m.name}: no test file {path}"
