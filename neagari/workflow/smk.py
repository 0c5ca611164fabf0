"""What every Snakemake script does around its work: log to the rule's log file, run torch on the
rule's threads, then write a provenance record for each output once the work succeeded."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator, Sequence


@contextlib.contextmanager
def rule_context(snakemake, config_keys: Sequence[str] | None = None, seed: int | None = None,
                 device: str | None = None, dtype: str | None = None,
                 extra: dict | None = None) -> Iterator[logging.Logger]:
    """``with rule_context(snakemake, ["score"]) as log: ...`` in each script.

    config_keys: the config subset this rule depends on (stored in the provenance record).
    device, dtype: where the engine ran and its weight-cache type, both recorded.
    extra: a dict the script may fill inside the block (facts about what it wrote); recorded as
    the provenance record's ``extra`` once the block has succeeded.
    Torch, where the script has loaded it, runs on the rule's ``threads`` (set_torch_threads).
    """
    set_torch_threads(getattr(snakemake, "threads", None))
    if device is not None and dtype is not None:
        device = f"{device}, weights {dtype}"
    from neagari.workflow.provenance import RuleProvenance

    log_path = snakemake.log[0] if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        handlers=handlers, force=True)
    log = logging.getLogger(f"neagari.rule.{snakemake.rule}")
    with RuleProvenance(snakemake, config_keys=config_keys, seed=seed, device=device) as prov:
        try:
            yield log
        except Exception:
            log.exception("rule %s failed", snakemake.rule)
            raise
        if extra:
            prov.extra.update(extra)


def set_torch_threads(threads: int | None) -> None:
    """Torch's intra-op threads set to ``threads``, the cores Snakemake counts for the rule (its
    ``threads:``, or --set-threads), whatever the environment says. Only where torch is loaded
    already: a script that uses it imports it (or the engine) before entering rule_context, and a
    script that does not pays no torch import."""
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None:
        torch.set_num_threads(max(1, int(threads)))
