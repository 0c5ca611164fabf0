"""Hand-run mutation check: plant known one-line bugs, one at a time, and see whether the tests catch them.

    python tests/mutants.py                 # every mutant
    python tests/mutants.py --only NAME     # one (repeatable); --list shows the names

Each mutant is a plausible single-line bug in the package (file, exact original text, mutated
text) and the few tests that should kill it. For each, the repository (without .git, .venv,
results and caches) is copied to a temporary directory, the mutation is applied there (the
original text must occur exactly once, or the check stops with exit status 2), and
``python -m pytest -x -q`` runs the named tests with PYTHONPATH set to the copy. A failing run
kills the mutant; a passing one means it survived. The working tree is never modified.
Prints a table and the kill rate; exits 0 whatever survived (2 only if a mutation cannot be applied).
Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", ".wheels", "results", ".snakemake", "__pycache__",
                                "*.egg-info", ".pytest_cache", "logs")


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str  # relative to the repository root
    original: str  # must occur exactly once in the file
    mutated: str
    tests: tuple[str, ...]  # pytest arguments (files, node ids, -k expressions)
    what: str


MUTANTS = [
    Mutant("focused-accepts-unchanged", "neagari/search/fitness.py",
           "ok = gain > 0 and", "ok = gain >= 0 and",
           ("tests/test_fitness.py", "tests/test_search.py::test_focused_fitness_is_lexicographic"),
           "focused judge accepts a focus target that did not improve"),
    Mutant("proportional-slack-sign", "neagari/search/fitness.py",
           "return self.slack_ratio * np.abs(self.base_c)", "return self.slack_ratio * self.base_c",
           ("tests/test_fitness.py",),
           "focused_proportional slack rho*b_c: wrong for a negative baseline"),
    Mutant("heldout-pass-with-copy", "neagari/evaluation/heldout.py",
           "if target in out and not has_rest:", "if target in out:",
           ("tests/test_heldout.py",),
           "held-out classify says PASS whenever the target is present"),
    Mutant("crossing-zero-gap", "neagari/analysis/records.py",
           "(before <= 0) & (after > 0)", "(before < 0) & (after > 0)",
           ("tests/test_audits.py",),
           "boundary crossing: a gap of exactly 0 before is not counted as wrong"),
    Mutant("distance-ratio-sign", "neagari/analysis/crossing.py",
           "return x / abs(mean_delta) if", "return x / mean_delta if",
           ("tests/test_audits.py",),
           "§7.6 distance ratio divides by the signed mean delta"),
    Mutant("sha256-after-repeated-move", "neagari/search/patch.py",
           "if start not in moved:", "if True:",
           ("tests/test_patch_moves.py", "tests/test_patch_q2.py"),
           "patched sha256 after moves: each move starts from the base block, so only a block's last move counts"),
    Mutant("q2-ties-to-even", "neagari/engine/q2.py",
           "q = np.trunc(v.astype(np.float64) + np.copysign(0.5, v))", "q = np.rint(v)",
           ("tests/test_q2.py",),
           "Q2_0 quantizer rounds ties to even, not away from zero as llama.cpp's roundf"),
    Mutant("q2-negate-mask", "neagari/engine/q2.py",
           "return (~codes & _LOW) << 1", "return (codes & _LOW) << 1",
           ("tests/test_q2.py",),
           "Q2_0 negate flips the high bit of codes whose low bit is set (0 <-> +2d)"),
    Mutant("commit-skips-gate-cache", "neagari/search/evaluator.py",
           "c.gate[..., u], c.up[..., u], c.act[..., u] = gate_u, up_u, act_u",
           "c.up[..., u], c.act[..., u] = up_u, act_u",
           ("tests/test_search.py::test_evaluator_commits_of_repeated_units_equal_fresh_forward",),
           "evaluator commit leaves the gate cache stale (gate move then up move: wrong logits)"),
    # already killed before this file was written
    Mutant("average-fitness-sign", "neagari/search/fitness.py",
           "return float((t - self.base_t).mean() - self.lam * ctrl)",
           "return float((t - self.base_t).mean() + self.lam * ctrl)",
           ("tests/test_search.py::test_average_fitness_hand_computed",),
           "average fitness adds the control penalty"),
    Mutant("q1-bit-order", "neagari/engine/q1.py",
           'np.unpackbits(blocks[:, SIGN_BYTES], axis=-1, bitorder="little")',
           'np.unpackbits(blocks[:, SIGN_BYTES], axis=-1, bitorder="big")',
           ("tests/test_q1.py",),
           "Q1_0 dequantize reads sign bits most-significant first"),
    Mutant("mcnemar-off-by-one", "neagari/stats.py",
           "for i in range(min(b, c) + 1))", "for i in range(min(b, c)))",
           ("tests/test_stats.py", "-k", "mcnemar"),
           "exact McNemar tail misses P[X = min(b, c)]"),
    Mutant("rope-theta-key", "neagari/engine/config.py",
           'rope_theta=f.float_key(k + "rope.freq_base", 1_000_000.0),',
           'rope_theta=f.float_key(k + "rope.theta", 1_000_000.0),',
           ("tests/test_train.py::test_trained_model_exports_to_the_engine",),
           "config reads RoPE theta from a key GGUF does not have (always the default)"),
]


class CannotApply(Exception):
    pass


def apply(root: Path, m: Mutant) -> None:
    f = root / m.path
    text = f.read_text()
    n = text.count(m.original)
    if n != 1:
        raise CannotApply(f"{m.name}: original text found {n} times in {m.path} (need exactly 1): {m.original!r}")
    f.write_text(text.replace(m.original, m.mutated))


def run_one(m: Mutant, timeout: float) -> tuple[str, float, str]:
    with tempfile.TemporaryDirectory(prefix=f"mutant-{m.name}-") as tmp:
        root = Path(tmp) / "repo"
        shutil.copytree(REPO, root, ignore=IGNORE)
        apply(root, m)
        env = {**os.environ, "PYTHONPATH": str(root), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *m.tests]
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - t0, ""
        dt = time.monotonic() - t0
        last = (r.stdout.strip().splitlines() or [""])[-1]
        if r.returncode == 0:
            return "SURVIVED", dt, last
        if r.returncode == 1:
            return "killed", dt, last
        if r.returncode == 5:  # no test selected
            return "SURVIVED", dt, "no tests collected"
        return "killed", dt, f"pytest exit {r.returncode}: {last}"  # e.g. an import error in the mutant


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", metavar="NAME", help="run only this mutant (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant (default 600)")
    args = ap.parse_args(argv)
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:28s} {m.path}: {m.what}")
        return 0
    chosen = MUTANTS
    if args.only:
        unknown = set(args.only) - {m.name for m in MUTANTS}
        if unknown:
            ap.error(f"unknown mutant(s): {', '.join(sorted(unknown))}")
        chosen = [m for m in MUTANTS if m.name in args.only]
    for m in chosen:  # fail before running anything if a mutation no longer applies
        text = (REPO / m.path).read_text()
        if text.count(m.original) != 1:
            print(f"cannot apply {m.name}: original text found {text.count(m.original)} times in {m.path}: "
                  f"{m.original!r}", file=sys.stderr)
            return 2
    rows = []
    for m in chosen:
        status, dt, last = run_one(m, args.timeout)
        rows.append((m, status, dt, last))
        print(f"{status:9s} {m.name:28s} {dt:6.1f}s  {last}", flush=True)
    print()
    print(f"{'mutant':28s} {'file':30s} {'result':9s} {'time':>7s}  tests")
    for m, status, dt, _ in rows:
        print(f"{m.name:28s} {m.path:30s} {status:9s} {dt:6.1f}s  {' '.join(m.tests)}")
    killed = sum(s == "killed" for _, s, _, _ in rows)
    print(f"\nkilled {killed}/{len(rows)} ({100 * killed / len(rows):.0f}%)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CannotApply as e:
        print(f"cannot apply {e}", file=sys.stderr)
        sys.exit(2)
