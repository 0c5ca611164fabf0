"""Fidelity to the paper's code: every place where this workflow may compute something other than
the paper's own code did (resources/paper/fidelity.yaml), and which choice a config makes.

``python -m neagari.report.fidelity config/*.yaml`` prints the README's table for those configs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from neagari.workflow.configcheck import validate_config

REPO = Path(__file__).resolve().parents[2]
FIDELITY = REPO / "resources" / "paper" / "fidelity.yaml"
SCHEMA = REPO / "config" / "schema.yaml"
FIELDS = ("topic", "paper", "alternative", "key", "why")


def load(path: str | Path = FIDELITY) -> list[dict]:
    entries = yaml.safe_load(Path(path).read_text())
    for i, e in enumerate(entries):
        missing = [f for f in FIELDS if f not in e]
        if missing or (e["key"] is not None and "paper_value" not in e):
            raise ValueError(f"{path}: entry {i} ({e.get('topic')!r}) lacks {', '.join(missing) or 'paper_value'}")
    return entries


def lookup(config: Mapping[str, Any], key: str) -> Any:
    """The value at a dotted key of a (defaults-filled) config; None where a block is absent."""
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _values(x: Any) -> list:
    return list(x) if isinstance(x, list) else [x]


def choice(entry: Mapping[str, Any], config: Mapping[str, Any]) -> str:
    """'paper's code', 'alternative', 'both' (a list key, e.g. the targeted fitnesses, holding the
    paper's value and an alternative_value) or 'not run' (the config has no such experiment)."""
    if entry["key"] is None:
        return "paper's code"
    if entry.get("enabled_by") and not lookup(config, entry["enabled_by"]):
        return "not run"
    value = lookup(config, entry["key"])
    if value is None and entry.get("default_from"):
        value = lookup(config, entry["default_from"])
    if value is None:
        return "not run"
    if entry.get("compare") == "exact":  # a value that is a list as a whole, e.g. a domain order
        return "paper's code" if value == entry["paper_value"] else "alternative"
    want = _values(entry["paper_value"])
    if isinstance(value, list):
        other = _values(entry.get("alternative_value") or [])
        paper, alt = any(v in want for v in value), any(v in other for v in value)
        return "both" if paper and alt else "paper's code" if paper else "alternative" if alt else "not run"
    return "paper's code" if value in want else "alternative"


def table_rows(entries: Sequence[Mapping], configs: Mapping[str, Mapping]) -> list[dict]:
    """One row per entry: the topic, both choices, the key, and each config's choice."""
    return [{"topic": e["topic"], "paper's code": e["paper"], "alternative": e["alternative"] or "—",
             "key": f"`{e['key']}`" if e["key"] else "—", **{n: choice(e, c) for n, c in configs.items()},
             "why": e["why"]} for e in entries]


def markdown(rows: Sequence[Mapping]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def config_file(path: str | Path) -> dict:
    """A config file with the schema's defaults filled in, as the workflow sees it."""
    config = yaml.safe_load(Path(path).read_text())
    validate_config(config, str(SCHEMA))
    return config


def main(argv: Sequence[str] | None = None) -> None:
    paths = list(argv if argv is not None else sys.argv[1:])
    if not paths:
        raise SystemExit("usage: python -m neagari.report.fidelity CONFIG.yaml [CONFIG.yaml ...]")
    configs = {f"`{Path(p).name}`": config_file(p) for p in paths}
    print(markdown(table_rows(load(), configs)))


if __name__ == "__main__":
    main()
