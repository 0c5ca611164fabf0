"""lm-eval's command line (``python -m neagari.evaluation.lm_eval_main run ...``), with its one
source of run-to-run randomness under greedy decoding seeded: IFEval's language checks
(``language:response_language``, ``change_case:english_lowercase`` and ``english_capital``) call
``langdetect.detect``, which samples n-grams from an unseeded generator, so the same reply can
pass in one run and fail in the next when its language is ambiguous (as a small model's often
is). Seeding it as langdetect's documentation advises makes every verdict a function of the reply."""

from __future__ import annotations

LANGDETECT_SEED = 0


def seed_language_detection(seed: int = LANGDETECT_SEED) -> None:
    """Every later ``langdetect.detect`` call in this process draws the same n-gram samples."""
    from langdetect import DetectorFactory

    DetectorFactory.seed = seed


def main() -> None:
    seed_language_detection()
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":
    main()
