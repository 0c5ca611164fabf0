"""Pinned downloads (rules/downloads.smk, rules/models.smk).

A download *source* is one config mapping with exactly one of

- ``hub: {repo, filename, revision, repo_type}``: a file of a Hugging Face hub repository (model
  GGUFs, benchmark datasets) through ``huggingface_hub.hf_hub_download`` into the user's Hugging
  Face cache (``HF_HOME`` / ``HF_HUB_CACHE``; a file already there is not fetched again), then
  checked and hard-linked (or, across file systems, copied) to its destination. A linked
  destination shares its bytes with the cache entry: never edit it in place;
- ``upstream: PATH``: a file of the paper's repository at the pinned commit
  (``downloads.upstream: {repo, commit}``), fetched from ``raw.githubusercontent.com``;
- ``url: URL``: any other https URL;
- ``path: PATH``: a local file (offline machines, tests): copied, never moved or removed; a
  relative one names the working directory's file if it has one, else the repository's;

plus ``sha256`` (64 hex digits, or null when nobody has computed it yet) and optionally ``size``
and ``git_blob``: the file's git blob id (SHA-1 of ``blob <size>\0`` and the bytes, what ``git
hash-object`` prints and a repository's tree lists), which pins a file of a git repository whose
tree is known but whose bytes nobody here has hashed. A download goes to ``<dest>.part`` first and
becomes ``<dest>`` only once its sha256, git blob id and size match; on a mismatch nothing is left
at ``<dest>``. A source whose content is not pinned (neither a sha256 nor a git blob id, or a hub
revision / upstream commit that is not a 40-hex commit id) is refused before any network access
unless ``allow_unpinned`` is set; then the hash it got is logged together with the config lines
that pin it. A source pinned by its git blob id alone is fetched and its sha256 logged, to pin.

The probe sets derived from downloaded files are made by :mod:`neagari.evaluation.datasets`.

The Snakefiles import this module while the workflow is parsed (the repository root is on
``sys.path`` then, installed or not): keep its module-level imports to the standard library.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from urllib.request import Request, urlopen
from neagari.hashing import sha256_file

HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")
SOURCE_KINDS = ("hub", "upstream", "url", "path")
RAW_URL = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"
CHUNK = 1 << 22
URL_TIMEOUT_S = 60
URL_ATTEMPTS = 3

log_default = logging.getLogger("neagari.workflow.downloads")


class DownloadError(RuntimeError):
    """A download that cannot be used: unpinned, failed, or not the pinned bytes. One line."""


# ---------------------------------------------------------------------------- sources


def source_kind(spec: Mapping[str, Any], where: str = "source") -> str:
    kinds = [k for k in SOURCE_KINDS if spec.get(k) is not None]
    if len(kinds) != 1:
        raise DownloadError(f"{where}: needs exactly one of {', '.join(SOURCE_KINDS)}; has {kinds or 'none'}")
    return kinds[0]


def raw_url(repo: str, commit: str, path: str) -> str:
    """The raw.githubusercontent.com address of one file of a GitHub repository at a commit."""
    return RAW_URL.format(repo=repo, commit=commit, path=path.lstrip("/"))


def describe(spec: Mapping[str, Any], upstream: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Where a source's bytes come from, as recorded in logs and provenance."""
    kind = source_kind(spec)
    if kind == "hub":
        hub = spec["hub"]
        return {"kind": kind, "repo": hub.get("repo"), "repo_type": hub.get("repo_type", "model"),
                "filename": hub.get("filename"), "revision": hub.get("revision")}
    if kind == "upstream":
        up = upstream or {}
        return {"kind": kind, "repo": up.get("repo"), "commit": up.get("commit"), "path": spec["upstream"],
                "url": raw_url(up.get("repo", "?"), up.get("commit", "?"), spec["upstream"])}
    return {"kind": kind, kind: str(spec[kind])}


def unpinned_reasons(spec: Mapping[str, Any], upstream: Mapping[str, Any] | None = None) -> list[str]:
    """Why a source's content is not fixed by the config (empty: fully pinned)."""
    reasons = []
    sha, blob = spec.get("sha256"), spec.get("git_blob")
    if sha is not None and not HEX64.match(str(sha)):
        raise DownloadError(f"sha256 {sha!r} is not 64 lower-case hex digits")
    if blob is not None and not HEX40.match(str(blob)):
        raise DownloadError(f"git_blob {blob!r} is not 40 lower-case hex digits")
    if sha is None and blob is None:
        reasons.append("sha256 is null")
    kind = source_kind(spec)
    if kind == "hub" and not HEX40.match(str(spec["hub"].get("revision") or "")):
        reasons.append(f"hub revision {spec['hub'].get('revision')!r} is not a commit id")
    if kind == "upstream" and not HEX40.match(str((upstream or {}).get("commit") or "")):
        reasons.append(f"upstream commit {(upstream or {}).get('commit')!r} is not a commit id")
    return reasons


def key_parts(key: str | Sequence[str]) -> list[str]:
    """A source's place in the config: a list of keys, or a dotted string (keys without dots)."""
    return key.split(".") if isinstance(key, str) else [str(k) for k in key]


def pin_lines(key: str | Sequence[str], value: str, field: str = "sha256") -> str:
    """The YAML lines that set ``field`` of the source at ``key`` (e.g. its sha256)."""
    parts = key_parts(key) + [field]
    return "\n".join("  " * i + (f"{p}: {value}" if i == len(parts) - 1 else f"{p}:") for i, p in enumerate(parts))


# ---------------------------------------------------------------------------- transports


def _fetch_path(src: str, part: Path) -> None:
    if not Path(src).is_file():
        raise DownloadError(f"local source {src}: no such file")
    shutil.copyfile(src, part)


def _fetch_url(url: str, part: Path, opener: Callable | None = None, attempts: int = URL_ATTEMPTS) -> None:
    """Stream ``url`` into ``part``; transient errors are retried, HTTP 4xx are not."""
    from urllib.error import HTTPError, URLError

    opener = opener or urlopen
    for attempt in range(1, attempts + 1):
        try:
            with opener(Request(url, headers={"User-Agent": "neagari-workflow"}), timeout=URL_TIMEOUT_S) as resp, \
                    open(part, "wb") as f:
                while block := resp.read(CHUNK):
                    f.write(block)
            return
        except HTTPError as e:
            if e.code < 500 or attempt == attempts:
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
        except (URLError, TimeoutError, ConnectionError) as e:
            if attempt == attempts:
                raise DownloadError(f"{url}: {getattr(e, 'reason', e)}") from None
        time.sleep(2 ** attempt)


SNAPSHOT_COMMIT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]")


def _link_or_copy(src: str | os.PathLike, part: Path) -> None:
    """``part`` as a hard link to ``src`` (no second copy of a large file), else a copy."""
    try:
        os.link(src, part)
    except OSError:  # another file system, or links not allowed there
        shutil.copyfile(src, part)


def _fetch_hub(hub: Mapping[str, Any], part: Path) -> tuple[str | None, str]:
    """One hub file through the user's Hugging Face cache (``HF_HOME``, ``HF_HUB_CACHE``), linked or
    copied into ``part``. Returns the commit the revision resolved to (if known) and the cached
    file's path."""
    import huggingface_hub  # imported here: only hub sources need it

    kwargs = dict(repo_id=hub["repo"], filename=hub["filename"], revision=hub.get("revision"),
                  repo_type=hub.get("repo_type", "model"))
    try:
        got = huggingface_hub.hf_hub_download(**kwargs)
    except Exception as e:  # noqa: BLE001 - the hub's errors are many; report one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DownloadError(f"hub {hub['repo']}/{hub['filename']} at {hub.get('revision')}: "
                            f"{type(e).__name__}: {first}") from None
    cached = os.path.realpath(got)  # the cache's snapshot entry is a link to its blob
    _link_or_copy(cached, part)
    if HEX40.match(str(hub.get("revision") or "")):
        return hub["revision"], cached
    if m := SNAPSHOT_COMMIT.search(str(got)):  # the cache files a snapshot under its commit
        return m.group(1), cached
    try:  # an unpinned revision: say which commit it was, so it can be pinned
        meta = huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(**kwargs))
        return meta.commit_hash, cached
    except Exception:  # noqa: BLE001 - only informative
        return None, cached


# ---------------------------------------------------------------------------- fetch


def fetch(spec: Mapping[str, Any], dest: str | os.PathLike, *, key: str | Sequence[str],
          upstream: Mapping[str, Any] | None = None, allow_unpinned: bool = False,
          log: logging.Logger | None = None, opener: Callable | None = None) -> dict:
    """Fetch one source to ``dest`` and check it. Returns a record of what was fetched.

    key: the source's place in the config (``["models", "bonsai-8b", "download"]``), for messages.
    Raises :class:`DownloadError` (and leaves nothing at ``dest``) when the source is unpinned
    and ``allow_unpinned`` is false, when the transfer fails, or when the bytes are not the
    pinned ones.
    """
    log = log or log_default
    dest = Path(dest)
    where = f"{'.'.join(key_parts(key))} -> {dest}"
    kind = source_kind(spec, where)
    reasons = unpinned_reasons(spec, upstream)
    if reasons and not allow_unpinned:
        raise DownloadError(f"{where}: refused, not pinned ({'; '.join(reasons)}); pin it in the config "
                            f"or set downloads.allow_unpinned: true (e.g. --config "
                            f"'downloads={{\"allow_unpinned\": true}}') to fetch it and log its hash")
    if kind == "upstream" and not (upstream or {}).get("repo"):
        raise DownloadError(f"{where}: an upstream source needs downloads.upstream.repo and .commit")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for stale in (part, dest):
        stale.unlink(missing_ok=True)
    record = describe(spec, upstream)
    cached = None
    log.info("fetching %s from %s", dest, record)
    try:
        if kind == "path":
            _fetch_path(str(spec["path"]), part)
        elif kind == "url":
            _fetch_url(str(spec["url"]), part, opener)
        elif kind == "upstream":
            _fetch_url(record["url"], part, opener)
        else:
            record["resolved_revision"], cached = _fetch_hub(spec["hub"], part)
        got = sha256_file(part)
        size = part.stat().st_size
        want = spec.get("sha256")
        if want is not None and got != want:
            held = f"; the Hugging Face cache holds these bytes at {cached}" if kind == "hub" else ""
            raise DownloadError(f"{where}: sha256 mismatch: expected {want}, got {got} ({size} bytes); "
                                f"file removed{held}")
        blob = spec.get("git_blob")
        got_blob = git_blob_id(part) if blob is not None else None
        if blob is not None and got_blob != blob:
            raise DownloadError(f"{where}: git blob mismatch: expected {blob}, got {got_blob} ({size} bytes); "
                                f"file removed")
        if spec.get("size") is not None and size != int(spec["size"]):
            raise DownloadError(f"{where}: size mismatch: expected {spec['size']} bytes, got {size}; file removed")
        os.replace(part, dest)
    except BaseException:
        part.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)
        raise
    record.update(sha256=got, bytes=size, pinned=not reasons)
    if reasons:
        msg = (f"UNPINNED download {dest} ({'; '.join(reasons)}): got sha256 {got}, {size} bytes. "
               f"Pin it with these config lines:\n{pin_lines(key, got)}")
        if record.get("resolved_revision") and kind == "hub" and "revision" in " ".join(reasons):
            msg += (f"\nand pin its hub revision (the commit it resolved to):\n"
                    f"{pin_lines(key_parts(key) + ['hub'], record['resolved_revision'], 'revision')}")
        log.warning(msg)
    elif spec.get("sha256") is None:
        record["git_blob"] = got_blob
        log.warning("%s: git blob %s matches the pin (%d bytes); its sha256 is %s, pin it with these config "
                    "lines:\n%s", dest, got_blob, size, got, pin_lines(key, got))
    else:
        log.info("%s: sha256 %s matches the pin (%d bytes)", dest, got, size)
    return record


def git_blob_id(path: str | os.PathLike) -> str:
    """The git blob id of a file: SHA-1 of ``blob <size>\0`` followed by its bytes."""
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- workflow helpers
# (rules/downloads.smk calls these with the config: Snakefiles hold rules, not functions)


def derived_keys(spec: Mapping[str, Any]) -> list[str]:
    """The download keys a derived probe set is built from, in a fixed order."""
    keys = [spec[k] for k in ("verbatim_training", "verbatim_notebook", "knowledge_controls", "upstream_controls")
            if spec.get(k)]
    keys = list(dict.fromkeys(keys))  # one file may give both the notebook's prompts and its controls
    return keys + [s["file"] for s in spec.get("samples", [])]


def download_path(key: str) -> str:
    return f"results/downloads/{key}"


def derived_path(name: str) -> str:
    return f"results/downloads/derived/{name}.json"


def allow_unpinned(config: Mapping[str, Any]) -> bool:
    """``downloads.allow_unpinned`` as a bool (nested ``--config`` values arrive as text)."""
    return str(config["downloads"]["allow_unpinned"]).lower() == "true"


def check_downloads_config(config: Mapping[str, Any]) -> None:
    """Config errors the schema cannot express (on the validated config, its defaults filled);
    raises ValueError listing all of them."""
    dl = config["downloads"]
    files, problems = dl["files"], []
    for key in files:
        parts = key.split("/")
        if parts[0] in ("", "derived") or ".." in parts:
            problems.append(f"downloads.files.{key}: a key is a relative path under results/downloads/, "
                            "without '..', not under derived/")
    for name, spec in dl["derived"].items():
        missing = [k for k in derived_keys(spec) if k not in files]
        if missing:
            problems.append(f"downloads.derived.{name}: unknown download keys {missing}")
    if any("upstream" in s for s in files.values()) and not dl.get("upstream"):
        problems.append("downloads.files: upstream sources need downloads.upstream {repo, commit}")
    if problems:
        raise ValueError("invalid downloads config:\n  " + "\n  ".join(problems))


def download_targets(config: Mapping[str, Any]) -> list[str]:
    """Every configured download, derived probe set and downloaded model."""
    dl = config["downloads"]
    out = [download_path(k) for k in dl["files"]]
    out += [derived_path(n) for n in dl["derived"]]
    out += [f"results/models/{m}.gguf" for m, s in config["models"].items() if s["source"] == "download"]
    return out
