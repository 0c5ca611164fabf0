"""Model files kept in the repository (``source: shipped``; resources/models/README.md).

A shipped model is a GGUF under ``resources/models/`` plus its record directory
(``<name>.record/``: ``record.json``, the training-loss table and figure, the llama.cpp
cross-check, the training log), made by rule ``ship_model`` (``make model``). The config pins the
GGUF's sha256 (``models.<name>.shipped``); :func:`verify_shipped` checks the file against the pin
and the record against the file before the workflow uses either, and ends in one
:class:`ShippedModelError` line naming the file and the config key.

``python -m neagari.workflow.shipped CONFIG`` (run by ``make model`` after the ship targets) writes
``resources/models/SHA256SUMS`` for the shipped files of every model CONFIG trains and prints the
``models:`` entries that use them.

The Snakefiles import this module while the workflow is parsed: keep its module-level imports to
the standard library.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from neagari.hashing import sha256_file
from neagari.workflow.downloads import HEX64, DownloadError, key_parts

RECORD = "record.json"
LOSS = "loss.parquet"
# What a record directory holds (rule ship_model), record.json first.
RECORD_FILES = (RECORD, LOSS, "loss.png", "llama_crosscheck.parquet", "train.log")
SUMS = "SHA256SUMS"
RETRAIN = "restore it (git checkout) or retrain with make model"


class ShippedModelError(DownloadError):
    """A shipped file that cannot be used: missing, or not the pinned bytes. One line."""


def _key(key: str | Sequence[str]) -> str:
    return ".".join(key_parts(key))


def _shown(path: str | os.PathLike) -> Path:
    """A path as messages show it: relative to the working directory when it lies below it."""
    p = Path(os.path.abspath(path))
    try:
        return p.relative_to(Path.cwd())
    except ValueError:
        return p


def read_record(record_dir: str | os.PathLike, key: str | Sequence[str] = "shipped") -> dict[str, Any]:
    """``record.json`` of a record directory, as a mapping; :class:`ShippedModelError` if unusable."""
    record_dir = _shown(record_dir)
    path = record_dir / RECORD
    where = f"(config {_key(key)}.record)"
    if not record_dir.is_dir():
        raise ShippedModelError(f"{record_dir}: no such directory {where}: {RETRAIN}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShippedModelError(f"{path}: no such file {where}: {RETRAIN}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ShippedModelError(f"{path}: not a readable JSON record ({type(e).__name__}: "
                                f"{str(e).splitlines()[0] if str(e) else ''}) {where}: {RETRAIN}") from None
    if not isinstance(record, dict):
        raise ShippedModelError(f"{path}: not a JSON object {where}: {RETRAIN}")
    return record


def verify_shipped(path: str | os.PathLike, sha256: str, record_dir: str | os.PathLike,
                   key: str | Sequence[str]) -> None:
    """Check a shipped GGUF and its record before use.

    path: the GGUF; sha256: its pin in the config; record_dir: its record directory; key: where
    the pins sit in the config (``models.<name>.shipped``), named in every message. Refused, with
    one :class:`ShippedModelError` line: a missing file, a file whose sha256 is not the pin, a
    missing or unreadable ``record.json``, a record whose ``sha256`` is not the pin (it describes
    another file), a record file whose sha256 is not the one ``record.json`` lists for it.
    """
    k = _key(key)
    path, record_dir = _shown(path), _shown(record_dir)
    if not HEX64.match(str(sha256)):
        raise ShippedModelError(f"config {k}.sha256: {sha256!r} is not 64 lower-case hex digits")
    if not path.exists():
        raise ShippedModelError(f"{path}: no such file (config {k}.path): {RETRAIN}")
    if not path.is_file():
        raise ShippedModelError(f"{path}: not a file (config {k}.path): {RETRAIN}")
    got = sha256_file(path)
    if got != sha256:
        raise ShippedModelError(f"{path}: sha256 {got} is not the pinned {sha256} (config {k}.sha256): "
                                f"the file is not the shipped one; {RETRAIN}")
    record = read_record(record_dir, k)
    rec_path = record_dir / RECORD
    if record.get("sha256") != sha256:
        raise ShippedModelError(f"{rec_path}: describes sha256 {record.get('sha256')}, not the pinned {sha256} "
                                f"(config {k}.sha256): the record is not the shipped file's; {RETRAIN}")
    listed = record.get("files") or {}
    for name in RECORD_FILES[1:]:
        want = listed.get(f"{record_dir.name}/{name}") if isinstance(listed, dict) else None
        f = record_dir / name
        if want is None or not f.is_file():
            continue  # not listed, or absent: loss.parquet, the one the workflow reads, is a rule input
        got = sha256_file(f)
        if got != want:
            raise ShippedModelError(f"{f}: sha256 {got} is not the {want} that {rec_path} lists: "
                                    f"the record has been changed; {RETRAIN}")


def verify_shipped_float(path: str | os.PathLike, record_dir: str | os.PathLike, key: str | Sequence[str]) -> str:
    """Check a shipped fp model's float file against the ``float_sha256`` its record names (the
    record itself checked by :func:`verify_shipped` first); returns that sha256. One
    :class:`ShippedModelError` line for a missing file, a record without a float file, or other bytes."""
    k = _key(key)
    path, record_dir = _shown(path), _shown(record_dir)
    want = read_record(record_dir, k).get("float_sha256")
    if not want:
        raise ShippedModelError(f"{record_dir / RECORD}: names no float file (float_sha256): not an fp model; {RETRAIN}")
    if not path.is_file():
        raise ShippedModelError(f"{path}: no such file (the float file of config {k}): {RETRAIN}")
    got = sha256_file(path)
    if got != want:
        raise ShippedModelError(f"{path}: sha256 {got} is not the {want} that {record_dir / RECORD} names: "
                                f"the float file is not the shipped one; {RETRAIN}")
    return want


# ---------------------------------------------------------------------------- shipping


def training_seconds(history: str | os.PathLike) -> float:
    """Wall time of the training steps: the loss table's last ``elapsed_s``, which a run resumed
    from its checkpoint carries on (the job's benchmark file would time only the resumed job)."""
    import polars as pl

    return float(pl.read_parquet(history)["elapsed_s"][-1])


def training_record(output: str | os.PathLike) -> dict[str, Any]:
    """The provenance record of a training output (``<output>.prov.json``), or {} if it has none."""
    from neagari.workflow.provenance import record_path

    try:
        data = json.loads(record_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def make_record(*, model: str, variant: str, embedded: dict, files: dict[str, str], gguf_sha256: str,
                float_sha256: str | None, corpus_sha256: str, tokenizer_sha256: str, trained: dict[str, Any],
                wall_time_s: float | None, git: dict, shipped_at: str) -> dict[str, Any]:
    """``record.json`` of a shipped model.

    files: shipped path (relative to the shipped directory) → sha256, every shipped file but
    record.json; trained: the training output's provenance record (its git state, environment
    and times are those of the training run; {} leaves them null); git: the work tree's state now.
    """
    train = embedded.get("train", {})
    env = trained.get("environment") or {}
    steps, batch, seq = train.get("steps"), train.get("batch_size"), train.get("seq_len")
    return {
        "format": "neagari-shipped-model", "format_version": 1,
        "model": model, "variant": variant,
        "sha256": gguf_sha256,
        **({"float_sha256": float_sha256} if float_sha256 else {}),
        "files": dict(sorted(files.items())),
        "embedded": embedded,
        "corpus_sha256": corpus_sha256, "tokenizer_sha256": tokenizer_sha256,
        "seed": embedded.get("seed"),
        "tokens_seen": steps * batch * seq if None not in (steps, batch, seq) else None,
        "training": {
            "device": train.get("device", "cpu"),
            "device_info": env.get("device"),
            "torch": (env.get("packages") or {}).get("torch"),
            "python": env.get("python"), "platform": env.get("platform"),
            "wall_time_s": wall_time_s,
            "started_at": trained.get("started_at"), "finished_at": trained.get("finished_at"),
            "rule": trained.get("rule"),
            "git": trained.get("git"),  # the commit that trained it
        },
        "git": git,  # the commit that shipped it
        "shipped_at": shipped_at,
    }


def shipped_files(models_dir: str | os.PathLike, model: str, variant: str | None) -> list[Path]:
    """Every file shipped for one model, relative to ``models_dir``: the Q1_0 GGUF, the float file
    of an fp model, the record's files."""
    names = [f"{model}.gguf"] + ([f"{model}.f16.gguf"] if variant == "fp" else [])
    names += [f"{model}.record/{n}" for n in RECORD_FILES]
    return [Path(n) for n in names]


def sha256sums(models_dir: str | os.PathLike, files: Sequence[Path]) -> str:
    """``sha256sum`` lines (``<sha>  <path>``, paths relative to ``models_dir``)."""
    root = Path(models_dir)
    return "".join(f"{sha256_file(root / f)}  {f.as_posix()}\n" for f in files)


def parse_sha256sums(text: str) -> dict[str, str]:
    """path → sha256 of a ``sha256sum`` file (text or binary mode marker)."""
    out = {}
    for line in text.splitlines():
        if line.strip():
            sha, _, name = line.partition(" ")
            out[name[1:] if name[:1] in " *" else name] = sha
    return out


def shipped_entries(models_dir: str | os.PathLike, models: dict[str, dict]) -> dict[str, dict]:
    """The ``models:`` entries of config/config.yaml that use the shipped files of ``models`` (name
    → entry with source embedded), each checked against its record first."""
    root = Path(models_dir)
    entries = {}
    for name, spec in models.items():
        gguf, record = root / f"{name}.gguf", root / f"{name}.record"
        entry = {"path": gguf.as_posix(), "sha256": sha256_file(gguf), "record": record.as_posix()}
        verify_shipped(entry["path"], entry["sha256"], entry["record"], ["models", name, "shipped"])
        entries[name] = {"source": "shipped", "variant": spec.get("variant"), "shipped": entry}
    return entries


def entries_yaml(entries: dict[str, dict]) -> str:
    lines = ["models:"]
    for name, e in entries.items():
        s = e["shipped"]
        lines += [f"  {name}:", "    source: shipped", f"    variant: {e['variant']}",
                  f"    shipped: {{path: {s['path']}, sha256: {s['sha256']}, record: {s['record']}}}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m neagari.workflow.shipped CONFIG [--dir resources/models]``."""
    import argparse

    import yaml

    p = argparse.ArgumentParser(prog="python -m neagari.workflow.shipped", description=main.__doc__)
    p.add_argument("config", help="the recipe config whose models were shipped (config/model.yaml)")
    p.add_argument("--dir", default="resources/models", help="where the shipped files are")
    a = p.parse_args(argv)
    config = yaml.safe_load(Path(a.config).read_text(encoding="utf-8"))
    models = {m: s for m, s in config["models"].items() if s.get("source") == "embedded"}
    try:
        entries = shipped_entries(a.dir, models)
        files = [f for m, s in models.items() for f in shipped_files(a.dir, m, s.get("variant"))]
        sums = sha256sums(a.dir, files)
    except (ShippedModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = Path(a.dir) / SUMS
    tmp = target.with_name(f".{SUMS}.{os.getpid()}.tmp")
    tmp.write_text(sums, encoding="utf-8")
    os.replace(tmp, target)
    print(f"# {target}: {len(files)} files (check: cd {a.dir} && sha256sum -c {SUMS})", file=sys.stderr)
    print("# the models of config/config.yaml that use them:", file=sys.stderr)
    print(entries_yaml(entries), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
