"""Result trees that travel: a Workflow Run RO-Crate (zip) out of ``results/``, and back in.

``export_crate`` packs every result file of a tree with its ``.prov.json`` record (the records
are kept byte for byte, so an import restores them exactly) and describes the run in the crate's
``ro-crate-metadata.json``, built with the ``rocrate`` package: RO-Crate 1.3, Workflow RO-Crate
1.1 and the Workflow Run RO-Crate profiles 0.6 (Process, Workflow and Provenance Run Crate; 0.6
is the version written for RO-Crate 1.3, the version ``rocrate`` writes). The tree must verify
first (:func:`neagari.workflow.provenance.verify`), and every file is hashed again while it is
zipped and compared with its record. What each record field becomes:

================================  ==============================================================
record                            crate
================================  ==============================================================
the run (all records)             ``CreateAction`` ``#workflow-run``: instrument the Snakefile
                                  (main entity: ``ComputationalWorkflow``, ``HowTo``), object the
                                  inputs no record made and the config, result every output,
                                  start/end the earliest ``started_at`` and the latest
                                  ``finished_at``; ``OrganizeAction`` ``#snakemake-run`` of the
                                  engine (Snakemake's version) orchestrating it
records of one rule execution     one ``CreateAction`` ``#run-<rule>-<digest>`` (the records that
(same rule, inputs, times...)     one job wrote share everything but ``output``): name the rule,
                                  ``startTime``/``endTime`` from ``started_at``/``finished_at``,
                                  ``actionStatus`` completed; a ``ControlAction`` ties it to the
                                  rule's ``HowToStep`` ``#step-<rule>`` (the workflow's ``step``)
``rule``                          the action's ``name``; the ``HowToStep``
``script`` (path, sha256)         the action's ``instrument``: the script as a ``File`` +
                                  ``SoftwareSourceCode`` + ``SoftwareApplication`` (in the crate
                                  when the tree's copy still has the recorded sha256, else a
                                  contextual ``#script-<sha>``); the workflow's ``hasPart``
``inputs`` (path, sha256, size)   the action's ``object``: the output entity that holds the file,
                                  else a ``File`` in the crate (inputs in the working directory:
                                  ``resources/``...), else a contextual ``CreativeWork`` with the
                                  recorded ``sha256`` (inputs outside it, or gone)
``output`` (path, sha256, size,   the action's ``result``: a ``File`` (``sha256``,
kind, files, mtime)               ``contentSize``, ``dateModified``), or a ``Dataset`` whose
                                  ``hasPart`` are its files; ``subjectOf`` the record's ``File``
the record file                   a ``File`` ``<output>.prov.json`` about the output and action
``config``                        ``PropertyValue`` ``#config-<key>`` per top-level key (JSON
                                  value; ``-<n>`` when records disagree) in the action's object
``params``, ``wildcards``,        ``PropertyValue`` ``<action>-params-<name>``,
``seed``                          ``<action>-wildcards-<name>``, ``<action>-seed`` in its object
``git`` (commit, dirty)           ``SoftwareSourceCode`` ``#git-<commit>`` that the scripts and
                                  the Snakefile are ``isPartOf``; the Snakefile's ``version``
                                  when one commit made everything
``environment`` (python,          ``SoftwareApplication`` per package and version
packages, platform, device)       (``https://pypi.org/project/<name>/<version>/``, ``#python-...``,
                                  ``#neagari-...``): the scripts' ``softwareRequirements``;
                                  platform and device in the action's ``description``
================================  ==============================================================

Every ``File`` has ``sha256`` (the workflow-run terms' context) and ``contentSize``.
Snakemake's own job records of the outputs (``.snakemake/metadata``, when the tree has them)
travel as ``snakemake-metadata.json``, an engine trace ``about`` the run.

``import_crate`` refuses a crate with a member whose path is absolute, leaves the crate (``..``)
or is a link, unpacks into a staging directory, checks each restored file's sha256 and size
against the crate's metadata (one line naming the file on a mismatch; nothing is written then),
refuses to replace existing files unless ``force``, and only then moves the files and records
into place.

**Why Snakemake reruns nothing after an import.** Snakemake 9 decides from file times and its
``.snakemake/metadata`` (``snakemake/dag.py``, ``update_needrun``; ``snakemake/persistence``):
a job reruns when an output is missing, when an input is newer than its oldest output and no
checksum says it is unchanged, when its script is newer than an output (the ``code`` trigger
checks the script's mtime even without metadata), or, only where a job record exists, when its
params, its set of inputs, its code text or its software stack differ from the record. A job
without a record is merely reported ("missing metadata"); that never triggers a rerun. Zip
members carry no usable times and a fresh checkout's scripts are newer than any recorded time,
so restoring the recorded mtimes would rerun every rule. The import therefore sets the times
itself, in the order of the run's DAG (taken from the crate's actions: an output one level
below another is older by 10 ms), the newest output no older than now and the oldest at least
one second newer than every script and every outside input the records name (so the ordering
survives file systems that keep whole seconds). A directory output also gets Snakemake's
``.snakemake_timestamp``. Snakemake's job records of the outputs, carried by the crate, are
restored into ``.snakemake/metadata`` (their incomplete markers removed), so the params, input
and code triggers stay live: a config that differs from the crate's still reruns what it
changes. The paper is then re-rendered only if something it reads changed. Benchmark files
under ``logs/`` left by an earlier run in the target tree are older than the imported outputs
and count as outputs: import into a tree without an earlier run's logs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mimetypes
import os
import shutil
import stat
import tempfile
import time
import zipfile
from base64 import urlsafe_b64encode
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote

from neagari.workflow.provenance import (IGNORED_SUFFIXES, RECORD_SUFFIX, SNAKEMAKE_TIMESTAMP, BadRecord,
                                         git_state, load_record, record_path, sha256_path, verify)

RO_CRATE = "https://w3id.org/ro/crate/1.3"
WFRUN_VERSION = "0.6"
PROFILES = {  # @id -> name, all listed in the root's conformsTo
    f"https://w3id.org/ro/wfrun/process/{WFRUN_VERSION}": "Process Run Crate",
    f"https://w3id.org/ro/wfrun/workflow/{WFRUN_VERSION}": "Workflow Run Crate",
    f"https://w3id.org/ro/wfrun/provenance/{WFRUN_VERSION}": "Provenance Run Crate",
}
WORKFLOW_PROFILE = f"https://w3id.org/ro/wfrun/workflow/{WFRUN_VERSION}"
WORKFLOW_RO_CRATE = "https://w3id.org/workflowhub/workflow-ro-crate/1.1"
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
METADATA_NAME = "ro-crate-metadata.json"
SNAKEMAKE_METADATA = "snakemake-metadata.json"
WORKFLOW_RUN_ID = "#workflow-run"
ENGINE_RUN_ID = "#snakemake-run"
COMPLETED = "http://schema.org/CompletedActionStatus"
# zipped without compression: already compressed or dense binary
STORED_SUFFIXES = (".gguf", ".parquet", ".png", ".jpg", ".pdf", ".pt", ".safetensors", ".npz", ".zip", ".gz",
                   ".bin")
FORMATS = {".parquet": "application/vnd.apache.parquet", ".gguf": "application/octet-stream",
           ".jsonl": "application/jsonl", ".smk": "text/x-snakemake", ".md": "text/markdown",
           ".yaml": "application/yaml", ".tsv": "text/tab-separated-values"}
LEVEL_STEP_NS = 10_000_000  # 10 ms between DAG levels of restored outputs
SOURCE_MARGIN_NS = 1_000_000_000  # the oldest output is at least this much newer than any source
CHUNK = 1 << 20


class CrateError(ValueError):
    """A crate cannot be written or imported; the message says why, in one line."""


# ---------------------------------------------------------------------------- helpers


def _format(path: str) -> str:
    suffix = PurePosixPath(path).suffix.lower()
    if path.endswith(RECORD_SUFFIX):
        return "application/json"
    return FORMATS.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _digest(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text))


def _member_problem(name: str) -> str | None:
    """Why a zip member name cannot be unpacked below a directory, or None."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        return "has an absolute path"
    if "\\" in name:
        return "has a backslash in its path"
    if ".." in PurePosixPath(name).parts:
        return "leaves the crate (..)"
    return None


def snakemake_record_path(metadata_dir: Path, key: str) -> Path:
    """Where Snakemake's file persistence keeps the job record of output ``key`` (its
    ``FilePersistence._record_path``: urlsafe base64, split below the file system's name limit)."""
    try:
        max_len = os.pathconf(metadata_dir, "PC_NAME_MAX") if os.name == "posix" else 255
    except (OSError, ValueError):
        max_len = 255
    max_len = max_len or 255
    b64 = urlsafe_b64encode(key.encode()).decode()
    parts = [b64[i: i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    return metadata_dir.joinpath(*(["@" + p for p in parts[:-1]] + [parts[-1]]))


def _zip_time(ts: float) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(max(ts, 315532800))  # the zip format starts in 1980
    return t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec


# ---------------------------------------------------------------------------- export


@dataclasses.dataclass
class _Job:
    """The records one rule execution wrote: everything but ``output`` is shared."""
    key: str
    shared: dict
    outputs: list[tuple[str, dict, str]] = dataclasses.field(default_factory=list)  # (path, output, record path)

    @property
    def rule(self) -> str:
        return self.shared["rule"]

    @property
    def action_id(self) -> str:
        return f"#run-{_slug(self.rule)}-{_digest(self.key)}"


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    out: Path
    records: int
    actions: int
    files: int
    bytes: int


def _workdir(record_file: Path, stored: str) -> Path:
    sp = PurePosixPath(stored)
    out = Path(os.path.abspath(record_file))
    out = out.with_name(out.name[: -len(RECORD_SUFFIX)])
    n = len(sp.parts)
    if sp.is_absolute() or not n or out.parts[-n:] != sp.parts:
        raise CrateError(f"{record_file}: the record names its output {stored!r}, which is not where the record "
                         f"lies; only a tree the workflow wrote can be exported")
    return out.parents[n - 1]


def _load_jobs(root: Path) -> tuple[Path, dict[str, _Job]]:
    record_files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".snakemake")
        record_files += [Path(dirpath) / n for n in sorted(filenames) if n.endswith(RECORD_SUFFIX)]
    if not record_files:
        raise CrateError(f"{root}: no provenance records, nothing to export")
    workdirs: set[Path] = set()
    jobs: dict[str, _Job] = {}
    for rf in record_files:
        try:
            load_record(rf)  # the schema verify relies on
        except BadRecord as e:
            raise CrateError(f"{rf}: {e}") from None
        raw = json.loads(rf.read_text(encoding="utf-8"))
        output = raw["output"]
        if output.get("kind") == "symlink":
            raise CrateError(f"{rf}: the output is a symbolic link, which a crate cannot carry")
        workdirs.add(_workdir(rf, output["path"]))
        shared = {k: v for k, v in raw.items() if k != "output"}
        key = _json(shared)
        job = jobs.setdefault(key, _Job(key, shared))
        rel_record = PurePosixPath(output["path"]).parent / rf.name
        job.outputs.append((output["path"], output, rel_record.as_posix()))
    if len(workdirs) > 1:
        raise CrateError(f"{root}: records written from {len(workdirs)} different working directories")
    ordered = dict(sorted(jobs.items(), key=lambda kv: (kv[1].shared.get("started_at") or "", kv[1].rule, kv[0])))
    return workdirs.pop(), ordered


class _Payload:
    """The zip being written: every member hashed as it is written."""

    def __init__(self, zf: zipfile.ZipFile):
        self.zf = zf
        self.members: dict[str, tuple[str, int]] = {}  # name -> (sha256, size)

    def add_file(self, src: Path, name: str, expected: str | None = None) -> tuple[str, int]:
        if name in self.members:
            return self.members[name]
        st = src.stat()
        zi = zipfile.ZipInfo(name, date_time=_zip_time(st.st_mtime))
        zi.compress_type = zipfile.ZIP_STORED if name.lower().endswith(STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
        zi.external_attr = (stat.S_IFREG | (st.st_mode & 0o777)) << 16
        zi.file_size = st.st_size  # lets zipfile choose zip64 for large members
        h, n = hashlib.sha256(), 0
        with open(src, "rb") as f, self.zf.open(zi, "w") as w:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                w.write(chunk)
                n += len(chunk)
        sha = h.hexdigest()
        if expected is not None and sha != expected:
            raise CrateError(f"{src}: sha256 {sha} does not match its record ({expected}); "
                             f"it changed since the tree was verified")
        self.members[name] = (sha, n)
        return sha, n

    def add_bytes(self, data: bytes, name: str) -> tuple[str, int]:
        zi = zipfile.ZipInfo(name, date_time=_zip_time(time.time()))
        zi.compress_type = zipfile.ZIP_DEFLATED
        zi.external_attr = (stat.S_IFREG | 0o644) << 16
        self.zf.writestr(zi, data)
        self.members[name] = (hashlib.sha256(data).hexdigest(), len(data))
        return self.members[name]


def _read_snakemake_records(workdir: Path, keys: list[str]) -> dict[str, dict]:
    metadata_dir = workdir / ".snakemake" / "metadata"
    if not metadata_dir.is_dir():
        return {}
    found = {}
    for key in keys:
        for candidate in (key, key.rstrip("/") + "/"):
            path = snakemake_record_path(metadata_dir, candidate)
            try:
                found[candidate] = json.loads(path.read_text(encoding="utf-8"))
                break
            except (OSError, ValueError):
                continue
    return found


def export_crate(root: str | os.PathLike, out: str | os.PathLike) -> ExportSummary:
    """Write the results under ``root`` with their records as a Workflow Run RO-Crate zip ``out``."""
    from rocrate.model.contextentity import ContextEntity
    from rocrate.rocrate import ROCrate

    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise CrateError(f"{root}: not a directory")
    out_abs, root_abs = Path(os.path.abspath(out)), Path(os.path.abspath(root))
    if root_abs in out_abs.parents:
        raise CrateError(f"--out {out} lies inside {root}: the crate would contain itself")
    problems = [p for p in verify(root, deep=True) if p.severity == "error"]
    if problems:
        raise CrateError(f"{root}: {len(problems)} provenance problem(s), first: {problems[0]}; "
                         f"`neagari provenance verify {root}` lists them")
    workdir, jobs = _load_jobs(root)
    snakefile = workdir / "Snakefile"
    if not snakefile.is_file():
        raise CrateError(f"{workdir}: no Snakefile; the crate's main entity is the workflow that made the results")

    outputs: dict[str, tuple[_Job, dict, str]] = {}  # output path -> (job, output entry, record path)
    inside: dict[str, str] = {}  # file inside a directory output -> that output's path
    for job in jobs.values():
        for path, entry, rec in job.outputs:
            outputs[path] = (job, entry, rec)
            for f in entry.get("files") or {}:
                inside[f"{path}/{f}"] = path

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            payload = _Payload(zf)
            crate = _build(ROCrate, ContextEntity, payload, workdir, jobs, outputs, inside, snakefile)
            metadata = b"".join(chunk for _, chunk in crate.metadata.stream())
            payload.add_bytes(metadata, METADATA_NAME)
        check_crate(json.loads(metadata), set(payload.members) | {METADATA_NAME}, payload.members)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file (the temporary one is private)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    files = len(payload.members)
    return ExportSummary(out, sum(len(j.outputs) for j in jobs.values()), len(jobs), files,
                         sum(size for _, size in payload.members.values()))


def _build(ROCrate, ContextEntity, payload: _Payload, workdir: Path, jobs: dict[str, _Job],
           outputs: dict, inside: dict, snakefile: Path):
    crate = ROCrate()  # RO-Crate 1.3
    crate.metadata.extra_contexts.append(WFRUN_CONTEXT)  # sha256, environment
    entities: dict[str, Any] = {}

    def context(identifier: str, props: dict):
        if identifier not in entities:
            entities[identifier] = crate.add(ContextEntity(crate, identifier, properties=props))
        return entities[identifier]

    def data_file(rel: str, src: Path, expected: str | None = None, **props):
        if rel in entities:
            return entities[rel]
        sha, size = payload.add_file(src, rel, expected)
        props = {"name": PurePosixPath(rel).name, "encodingFormat": _format(rel), **props,
                 "sha256": sha, "contentSize": str(size)}
        entities[rel] = crate.add_file(source=src, dest_path=rel, properties=props)
        return entities[rel]

    records = [(job, o) for job in jobs.values() for o in job.outputs]
    started = [j.shared.get("started_at") for j in jobs.values() if j.shared.get("started_at")]
    finished = [j.shared.get("finished_at") for j in jobs.values() if j.shared.get("finished_at")]
    packages = Counter((name, v) for j in jobs.values()
                       for name, v in ((j.shared.get("environment") or {}).get("packages") or {}).items() if v)
    smk_versions = Counter({v: c for (name, v), c in packages.items() if name == "snakemake"})
    smk_version = smk_versions.most_common(1)[0][0] if smk_versions else None
    commits = Counter((j.shared.get("git") or {}).get("commit") for j in jobs.values())
    commits.pop(None, None)

    # the root and the profiles
    rd = crate.root_dataset
    rd["name"] = f"Neagari workflow results: {len(records)} result files of {workdir.name}"
    rd["description"] = ("Result files of the Neagari paper workflow with their provenance records "
                         "(<file>.prov.json), as a Workflow Run RO-Crate (Provenance Run Crate).")
    rd["datePublished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rd["license"] = context("https://spdx.org/licenses/MIT", {"@type": "CreativeWork", "name": "MIT License"})
    wf_sha, wf_size = payload.add_file(snakefile, "Snakefile")
    wf = crate.add_workflow(source=snakefile, dest_path="Snakefile", main=True, lang="snakemake",
                            lang_version=smk_version, properties={
                                "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"]})
    entities["Snakefile"] = wf
    for pid, name in PROFILES.items():
        rd.append_to("conformsTo", context(pid, {"@type": ["CreativeWork", "Profile"], "name": name,
                                                 "version": WFRUN_VERSION}))
    wf["name"] = "neagari-workflow"
    wf["description"] = "The Snakemake workflow regenerating the Neagari paper (Snakefile and rules/*.smk)."
    wf["sha256"], wf["contentSize"], wf["encodingFormat"] = wf_sha, str(wf_size), "text/x-snakemake"
    if len(commits) == 1:
        wf["version"] = next(iter(commits))
    rule_files = [data_file(p.relative_to(workdir).as_posix(), p, description="rule file included by the Snakefile")
                  for p in sorted((workdir / "rules").glob("*.smk"))]
    if rule_files:
        wf["isBasedOn"] = rule_files

    # software and source versions
    def software(name: str, version: str):
        if name == "neagari" or "+" in version:  # this package, or a local build not on PyPI
            ident, url = f"#{_slug(name)}-{_slug(version)}", None
        else:
            ident, url = f"https://pypi.org/project/{name}/{version}/", f"https://pypi.org/project/{name}/"
        return context(ident, {"@type": "SoftwareApplication", "name": name, "version": version,
                               **({"url": url} if url else {})})

    def python(version: str):
        return context(f"#python-{_slug(version)}", {"@type": "SoftwareApplication", "name": "Python",
                                                    "version": version, "url": "https://www.python.org/"})

    def git_entity(git: dict):
        commit = (git or {}).get("commit")
        if not commit:
            return None
        dirty = (git or {}).get("dirty")
        return context(f"#git-{commit}", {
            "@type": "SoftwareSourceCode", "name": f"neagari-workflow at commit {commit[:12]}",
            "identifier": commit, "version": commit,
            "description": "git commit of the work tree the rules ran in"
                           + ("" if dirty is None else "; the tree had uncommitted changes" if dirty else
                              "; the tree was clean")})

    # the scripts (tools), one entity per (path, sha256)
    tools: dict[tuple, Any] = {}

    def tool(job: _Job):
        script = job.shared.get("script")
        env = job.shared.get("environment") or {}
        if not script:
            key = ("rule", job.rule)
            if key not in tools:
                tools[key] = context(f"#rule-{_slug(job.rule)}", {"@type": "SoftwareApplication",
                                                                  "name": f"rule {job.rule}"})
        else:
            key = (script["path"], script.get("sha256"))
            if key not in tools:
                p = Path(script["path"])
                src = p if p.is_absolute() else workdir / p
                in_tree = workdir in src.parents if p.is_absolute() else ".." not in p.parts
                props = {"name": script["path"], "programmingLanguage": "Python"}
                if in_tree and src.is_file() and script.get("sha256") and sha256_path(src) == script["sha256"]:
                    rel = src.relative_to(workdir).as_posix()
                    ent = data_file(rel, src, script["sha256"], **props,
                                    **{"@type": ["File", "SoftwareSourceCode", "SoftwareApplication"]})
                else:
                    ent = context(f"#script-{(script.get('sha256') or _digest(script['path']))[:16]}", {
                        "@type": ["SoftwareSourceCode", "SoftwareApplication"], **props,
                        **({"sha256": script["sha256"]} if script.get("sha256") else {}),
                        "description": "the recorded script; the tree's copy differs, so it is not in the crate"})
                tools[key] = ent
        ent = tools[key]
        reqs = [software(n, v) for n, v in sorted((env.get("packages") or {}).items()) if v]
        if env.get("python"):
            reqs.append(python(env["python"]))
        for r in reqs:
            if r.id not in [x.id for x in _as_list(ent.get("softwareRequirements"))]:
                ent.append_to("softwareRequirements", r)
        g = git_entity(job.shared.get("git"))
        if g is not None and g.id not in [x.id for x in _as_list(ent.get("isPartOf"))]:
            ent.append_to("isPartOf", g)
        return ent

    # outputs and their records
    def output_entity(path: str):
        job, entry, rec = outputs[path]
        src = workdir / path
        props = {"dateModified": _iso(entry.get("mtime"))} if entry.get("mtime") is not None else {}
        if entry.get("files") is not None:
            parts = [data_file(f"{path}/{f}", src / f, sha) for f, sha in entry["files"].items()]
            ds_props = {"name": PurePosixPath(path).name, "sha256": entry["sha256"], "contentSize": str(entry["size"]),
                        "description": "a directory output; sha256 over its files' sorted (path, sha256) pairs",
                        **props}
            ent = crate.add_dataset(source=src, dest_path=path, properties=ds_props)
            for p in parts:
                ent.append_to("hasPart", p)
            entities[path] = ent
        else:
            ent = data_file(path, src, entry["sha256"], **props)
        record = data_file(rec, workdir / rec, None, description=f"provenance record of {path}")
        record["about"] = [ent, {"@id": job.action_id}]
        ent["subjectOf"] = record
        return ent

    for path in outputs:
        output_entity(path)

    # inputs no record made
    def input_entity(inp: dict):
        path = inp["path"]
        if path in outputs:
            return entities[path]
        if path in inside:
            return entities.get(path) or entities[inside[path]]
        p = Path(path)
        src = p if p.is_absolute() else workdir / p
        in_tree = not p.is_absolute() and ".." not in p.parts
        if in_tree and inp.get("sha256") and src.is_file() and not src.is_symlink():
            if sha256_path(src) == inp["sha256"]:
                return data_file(path, src, inp["sha256"], description="workflow input")
        if in_tree and inp.get("sha256") and src.is_dir() and not src.is_symlink() and path not in entities:
            if sha256_path(src) == inp["sha256"]:
                files = {}
                for dirpath, dirnames, filenames in os.walk(src):
                    dirnames.sort()
                    for n in sorted(filenames):
                        if n != SNAKEMAKE_TIMESTAMP and not n.endswith(IGNORED_SUFFIXES):
                            full = Path(dirpath) / n
                            files[full.relative_to(workdir).as_posix()] = full
                parts = [data_file(rel, full) for rel, full in files.items()]
                ent = crate.add_dataset(source=src, dest_path=path, properties={
                    "name": p.name, "sha256": inp["sha256"], "description": "workflow input (a directory)",
                    **({"contentSize": str(inp["size"])} if inp.get("size") is not None else {})})
                for part in parts:
                    ent.append_to("hasPart", part)
                entities[path] = ent
                return ent
        if in_tree and path in entities:
            return entities[path]
        state = ("absent when the rule ran" if not inp.get("sha256") else
                 "outside the working directory" if not in_tree else "no longer present as recorded")
        return context(f"#input-{_digest(path + (inp.get('sha256') or ''), 16)}", {
            "@type": "CreativeWork", "name": path, "description": f"input not in the crate: {state}",
            **({"sha256": inp["sha256"]} if inp.get("sha256") else {}),
            **({"contentSize": str(inp["size"])} if inp.get("size") is not None else {})})

    # config, one PropertyValue per top-level key and value
    config_values: dict[str, list[str]] = defaultdict(list)
    for job in jobs.values():
        cfg = job.shared.get("config")
        for k, v in (cfg.items() if isinstance(cfg, dict) else []):
            if _json(v) not in config_values[k]:
                config_values[k].append(_json(v))

    def config_entity(key: str, value: Any):
        values = config_values[key]
        text = _json(value)
        suffix = "" if len(values) == 1 else f"-{values.index(text) + 1}"
        return context(f"#config-{_slug(key)}{suffix}", {"@type": "PropertyValue", "name": key, "value": text,
                                                          "encodingFormat": "application/json",
                                                          "description": "workflow config key (JSON)"})

    # the rule executions
    steps: dict[str, Any] = {}
    controls, all_inputs, all_configs = [], [], []
    for job in jobs.values():
        s = job.shared
        instrument = tool(job)
        if job.rule not in steps:
            steps[job.rule] = context(f"#step-{_slug(job.rule)}", {
                "@type": "HowToStep", "name": job.rule, "position": str(len(steps))})
        step = steps[job.rule]
        if instrument.id not in [x.id for x in _as_list(step.get("workExample"))]:
            step.append_to("workExample", instrument)
        objects = []
        for inp in s.get("inputs") or []:
            ent = input_entity(inp)
            if ent.id not in [o.id for o in objects]:
                objects.append(ent)
            if inp["path"] not in outputs and inp["path"] not in inside and ent.id not in [x.id for x in all_inputs]:
                all_inputs.append(ent)
        cfg = s.get("config")
        for k, v in (cfg.items() if isinstance(cfg, dict) else []):
            ent = config_entity(k, v)
            objects.append(ent)
            if ent.id not in [x.id for x in all_configs]:
                all_configs.append(ent)
        aid = job.action_id
        for field in ("params", "wildcards"):
            values = s.get(field) or {}
            for name, value in (values.items() if isinstance(values, dict) else enumerate(values)):
                objects.append(context(f"{aid}-{field}-{_slug(name)}", {
                    "@type": "PropertyValue", "name": f"{field}.{name}", "value": _json(value),
                    "encodingFormat": "application/json"}))
        if s.get("seed") is not None:
            objects.append(context(f"{aid}-seed", {"@type": "PropertyValue", "name": "seed", "value": _json(s["seed"])}))
        env = s.get("environment") or {}
        device = env.get("device") or {}
        git = s.get("git") or {}
        wildcards = s.get("wildcards") or {}
        where = ", ".join(f"{k}={v}" for k, v in wildcards.items()) if isinstance(wildcards, dict) else ""
        description = "; ".join(x for x in (
            f"rule {job.rule}" + (f" ({where})" if where else ""),
            f"Python {env['python']}" if env.get("python") else "",
            f"platform {env['platform']}" if env.get("platform") else "",
            f"device {s['device']}" if s.get("device") else "",
            f"GPU {device['name']}" if device.get("name") else "",
            f"git {git['commit']}" + (" (uncommitted changes)" if git.get("dirty") else "") if git.get("commit") else "",
        ) if x)
        props = {"@type": "CreateAction", "name": job.rule, "description": description,
                 "actionStatus": {"@id": COMPLETED}}
        if s.get("started_at"):
            props["startTime"] = s["started_at"]
        if s.get("finished_at"):
            props["endTime"] = s["finished_at"]
        action = crate.add_action(instrument, identifier=aid, object=objects,
                                  result=[entities[p] for p, _, _ in job.outputs], properties=props)
        entities[aid] = action
        rd.append_to("mentions", action)
        control = crate.add_action(step, identifier=f"#control-{aid[1:]}", object=action,
                                   properties={"@type": "ControlAction", "name": f"orchestrate {job.rule}"})
        controls.append(control)

    wf["step"] = list(steps.values())
    wf["hasPart"] = list({t.id: t for t in tools.values()}.values())
    for ident in commits:
        wf.append_to("isPartOf", entities[f"#git-{ident}"])

    # the run as a whole, and the engine that ran it
    run_props = {"@type": "CreateAction", "name": f"Run of the workflow ({len(jobs)} rule executions)",
                 "actionStatus": {"@id": COMPLETED}}
    if started:
        run_props["startTime"] = min(started)
    if finished:
        run_props["endTime"] = max(finished)
    run = crate.add_action(wf, identifier=WORKFLOW_RUN_ID, object=all_inputs + all_configs,
                           result=[entities[p] for p in outputs], properties=run_props)
    rd.append_to("mentions", run)
    engine = software("snakemake", smk_version) if smk_version else context(
        "#snakemake", {"@type": "SoftwareApplication", "name": "snakemake"})
    crate.add_action(engine, identifier=ENGINE_RUN_ID, object=controls, result=run, properties={
        "@type": "OrganizeAction", "name": f"Run of Snakemake {smk_version or ''}".strip(),
        **({"startTime": min(started)} if started else {}), **({"endTime": max(finished)} if finished else {})})

    smk = _read_snakemake_records(workdir, list(outputs))
    if smk:
        data = (json.dumps(smk, indent=1, sort_keys=True) + "\n").encode()
        sha, size = payload.add_bytes(data, SNAKEMAKE_METADATA)
        entities[SNAKEMAKE_METADATA] = crate.add_file(source=None, dest_path=SNAKEMAKE_METADATA, properties={
            "name": "Snakemake job records of the result files",
            "description": "the .snakemake/metadata records of the outputs, keyed by path; restored on import "
                           "so that Snakemake's params, input and code triggers stay live",
            "encodingFormat": "application/json", "sha256": sha, "contentSize": str(size), "about": run})
    return crate


def _as_list(value) -> list:
    return [] if value is None else value if isinstance(value, list) else [value]


# ---------------------------------------------------------------------------- reading a crate


@dataclasses.dataclass(frozen=True)
class CrateInfo:
    """What a crate's metadata says, checked: the entities import restores and the run's DAG."""
    main_entity: str
    actions: dict[str, dict]  # step CreateAction id -> {"object": [...], "result": [...]}
    files: dict[str, tuple[str, int]]  # member path of every File -> (sha256, size)
    restore: dict[str, str]  # member path -> "output" | "record" | "part", in the crate's order
    producer: dict[str, str]  # output path (file or directory) -> step CreateAction id
    directories: set[str]  # directory output paths
    sources: list[str]  # relative paths of scripts and inputs no step made
    commits: list[str]
    snakemake_metadata: str | None


def _ids(value) -> list[str]:
    out = []
    for v in _as_list(value):
        if isinstance(v, dict) and isinstance(v.get("@id"), str):
            out.append(v["@id"])
        elif isinstance(v, str):
            out.append(v)
    return out


def _types(entity: dict) -> set[str]:
    return set(_as_list(entity.get("@type")))


def _path_of(identifier: str) -> str:
    """The member path of a data entity: its relative @id, percent-decoded, without a trailing slash."""
    path = unquote(identifier).rstrip("/")
    problem = _member_problem(path)
    if problem or path.startswith("#") or "://" in path:
        raise CrateError(f"data entity {identifier!r} {problem or 'is not a path inside the crate'}")
    return path


def check_crate(metadata: dict, members: set[str] | None = None,
                hashes: dict[str, tuple[str, int]] | None = None) -> CrateInfo:
    """Check a crate's metadata with ``rocrate``'s reader and against this module's profile use:
    RO-Crate 1.3, the Workflow Run profiles in the root's ``conformsTo``, a ``ComputationalWorkflow``
    main entity and a ``CreateAction`` of it, every step action's instrument, objects and results
    present, every ``File`` with ``sha256`` and ``contentSize``, and, given the zip's ``members``
    (and ``hashes`` of what was written), every ``File`` present. Returns what import needs."""
    from rocrate.rocrate import ROCrate

    try:
        crate = ROCrate(json.loads(json.dumps(metadata)))  # the reader consumes its input
    except (ValueError, KeyError, TypeError, AssertionError) as e:
        raise CrateError(f"not a readable RO-Crate ({type(e).__name__}: {e})") from None
    graph = {e["@id"]: e for e in metadata.get("@graph", []) if isinstance(e, dict) and "@id" in e}
    descriptor = graph.get(METADATA_NAME, {})
    if RO_CRATE not in _ids(descriptor.get("conformsTo")):
        raise CrateError(f"the metadata does not conform to {RO_CRATE}")
    root = crate.root_dataset
    profiles = set(_ids(root.properties().get("conformsTo")))
    missing = [p for p in (*PROFILES, WORKFLOW_RO_CRATE) if p not in profiles]
    if missing:
        raise CrateError(f"the crate does not declare the profile {missing[0]} in its conformsTo")
    main = crate.mainEntity
    if main is None or "ComputationalWorkflow" not in _as_list(main.type):
        raise CrateError("the crate's main entity is not a ComputationalWorkflow")
    actions = {i: e for i, e in graph.items() if "CreateAction" in _types(e)}
    runs = [i for i, e in actions.items() if main.id in _ids(e.get("instrument"))]
    if not runs:
        raise CrateError(f"no CreateAction has the main workflow {main.id} as its instrument")
    files: dict[str, tuple[str, int]] = {}
    for ident, e in graph.items():
        if "File" in _types(e) and not ident.startswith("#") and ident != METADATA_NAME:
            path = _path_of(ident)
            sha, size = e.get("sha256"), e.get("contentSize")
            if not isinstance(sha, str) or len(sha) != 64 or size is None or not str(size).isdigit():
                raise CrateError(f"{path}: the crate's metadata gives no sha256 and contentSize")
            if members is not None and path not in members:
                raise CrateError(f"{path}: described in the metadata but not in the crate")
            if hashes is not None and hashes.get(path) != (sha, int(size)):
                raise CrateError(f"{path}: the metadata's sha256 and size are not what was written")
            files[path] = (sha, int(size))
    steps: dict[str, dict] = {}
    restore: dict[str, str] = {}
    producer: dict[str, str] = {}
    directories: set[str] = set()
    for ident, e in actions.items():
        if ident in runs:
            continue
        for key in ("instrument", "object", "result"):
            for ref in _ids(e.get(key)):
                if ref not in graph and crate.get(ref) is None:
                    raise CrateError(f"action {ident}: its {key} {ref} is not in the crate's metadata")
        if not _ids(e.get("instrument")):
            raise CrateError(f"action {ident} has no instrument")
        steps[ident] = {"object": _ids(e.get("object")), "result": _ids(e.get("result"))}
        for ref in steps[ident]["result"]:
            out = graph.get(ref, {})
            path = _path_of(ref)
            producer[path] = ident
            if "Dataset" in _types(out):
                directories.add(path)
                for part in _ids(out.get("hasPart")):
                    restore[_path_of(part)] = "part"
            elif "File" in _types(out):
                restore[path] = "output"
            else:
                raise CrateError(f"action {ident}: its result {ref} is neither a File nor a Dataset")
            records = _ids(out.get("subjectOf"))
            if not records:
                raise CrateError(f"{path}: the crate holds no provenance record of it")
            for r in records:
                restore[_path_of(r)] = "record"
    unknown = [p for p in restore if p not in files]
    if unknown:
        raise CrateError(f"{unknown[0]}: restored by the crate but not described as a File with a sha256")
    tools = {r for e in (graph[i] for i in steps) for r in _ids(e.get("instrument"))}
    inputs = {r for s in steps.values() for r in s["object"]}
    sources = sorted(_path_of(r) for r in tools | inputs
                     if not r.startswith("#") and "://" not in r and _path_of(r) not in producer
                     and _path_of(r) not in restore)
    sources += sorted(graph[r]["name"] for r in inputs  # inputs outside the working directory
                      if r.startswith("#input-") and isinstance(graph[r].get("name"), str)
                      and os.path.isabs(graph[r]["name"]))
    commits = sorted(e.get("identifier") for i, e in graph.items() if i.startswith("#git-") and e.get("identifier"))
    smk = SNAKEMAKE_METADATA if SNAKEMAKE_METADATA in files else None
    return CrateInfo(main.id, steps, files, restore, producer, directories, sources, commits, smk)


# ---------------------------------------------------------------------------- import


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    into: Path
    files: int
    records: int
    snakemake_records: int
    warnings: tuple[str, ...]


def _open_crate(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise CrateError(f"{path}: not a zip file ({e})") from None


def _check_members(path: Path, zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        problem = _member_problem(info.filename)
        if problem is None and stat.S_ISLNK(info.external_attr >> 16):
            problem = "is a symbolic link"
        if problem is None and info.filename.rstrip("/") in members:
            problem = "occurs twice"
        if problem:
            raise CrateError(f"{path}: member {info.filename!r} {problem}; refusing the crate")
        if not info.is_dir():
            members[info.filename] = info
    return members


def _levels(info: CrateInfo) -> dict[str, int]:
    """DAG level of each step action: 0 when it reads no other step's output."""
    inside = {p: d for d in info.directories for p in info.restore if p.startswith(d + "/")}
    depends: dict[str, set[str]] = {}
    for ident, s in info.actions.items():
        deps = set()
        for ref in s["object"]:
            if ref.startswith("#") or "://" in ref:
                continue
            p = unquote(ref).rstrip("/")
            p = inside.get(p, p)
            if p in info.producer and info.producer[p] != ident:
                deps.add(info.producer[p])
        depends[ident] = deps
    level: dict[str, int] = {}

    def visit(a: str, trail: frozenset) -> int:
        if a in level:
            return level[a]
        if a in trail:
            raise CrateError(f"the crate's actions form a cycle through {a}")
        level[a] = 1 + max((visit(d, trail | {a}) for d in depends[a]), default=-1)
        return level[a]

    for a in depends:
        visit(a, frozenset())
    return level


def _set_time(path: Path, ns: int) -> None:
    os.utime(path, ns=(ns, ns), follow_symlinks=False)


def import_crate(crate_path: str | os.PathLike, into: str | os.PathLike = ".", force: bool = False) -> ImportSummary:
    """Unpack a crate written by :func:`export_crate` below ``into`` (see the module docstring)."""
    crate_path, into = Path(crate_path), Path(into)
    if not crate_path.is_file():
        raise CrateError(f"{crate_path}: no such file")
    into.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []
    with _open_crate(crate_path) as zf:
        members = _check_members(crate_path, zf)
        if METADATA_NAME not in members:
            raise CrateError(f"{crate_path}: no {METADATA_NAME}; not an RO-Crate")
        try:
            metadata = json.loads(zf.read(METADATA_NAME).decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise CrateError(f"{crate_path}: {METADATA_NAME} is not JSON ({e})") from None
        info = check_crate(metadata, set(members))
        existing = [p for p in info.restore if os.path.lexists(into / p)]
        existing += [d for d in info.directories if os.path.lexists(into / d) and d not in existing]
        if existing and not force:
            raise CrateError(f"{into / existing[0]} exists ({len(existing)} file(s) of the crate do); "
                             f"pass --force to overwrite")
        smk_records = {}
        staging = Path(tempfile.mkdtemp(prefix=".neagari-import-", dir=into))
        try:
            for name in [*info.restore, *([info.snakemake_metadata] if info.snakemake_metadata else [])]:
                expected_sha, expected_size = info.files[name]
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                h, n = hashlib.sha256(), 0
                try:
                    with zf.open(members[name]) as src, open(target, "wb") as dst:
                        while chunk := src.read(CHUNK):
                            h.update(chunk)
                            dst.write(chunk)
                            n += len(chunk)
                except (zipfile.BadZipFile, OSError, EOFError) as e:  # a corrupt member (CRC) reads as such
                    raise CrateError(f"{name}: cannot be read from the crate ({e})") from None
                if (h.hexdigest(), n) != (expected_sha, expected_size):
                    raise CrateError(f"{name}: sha256 {h.hexdigest()} ({n} bytes) does not match the crate's "
                                     f"metadata ({expected_sha}, {expected_size} bytes); refusing the crate")
                os.chmod(target, ((members[name].external_attr >> 16) & 0o777) or 0o644)
            if info.snakemake_metadata:
                try:
                    smk_records = json.loads((staging / info.snakemake_metadata).read_text(encoding="utf-8"))
                except ValueError:
                    smk_records = {}
            # everything checked: move into place, directory outputs whole
            for d in sorted(info.directories):
                dest = into / d
                if os.path.lexists(dest):
                    shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
                dest.parent.mkdir(parents=True, exist_ok=True)
                (staging / d).mkdir(parents=True, exist_ok=True)
                os.replace(staging / d, dest)
            for name, role in info.restore.items():
                if role == "part":
                    continue
                dest = into / name
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / name, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    _restore_times(into, info)
    restored_smk = _restore_snakemake_records(into, smk_records, set(info.producer))
    here = git_state(into).get("commit")
    if info.commits and here and here not in info.commits:
        warnings.append(f"the crate's results were made at commit {info.commits[0][:12]}, this tree is at "
                        f"{here[:12]}: verify may report changed inputs and Snakemake rerun changed rules")
    records = sum(1 for r in info.restore.values() if r == "record")
    return ImportSummary(into, len(info.restore), records, restored_smk, tuple(warnings))


def _restore_times(into: Path, info: CrateInfo) -> None:
    level = _levels(info)
    depth = max(level.values(), default=0)
    newest = 0
    for rel in info.sources:
        try:
            newest = max(newest, (into / rel).stat().st_mtime_ns)
        except OSError:
            continue
    end = max(time.time_ns(), newest + SOURCE_MARGIN_NS + depth * LEVEL_STEP_NS)

    def at(action: str) -> int:
        return end - (depth - level.get(action, depth)) * LEVEL_STEP_NS

    records_of: dict[str, list[str]] = defaultdict(list)
    for name, role in info.restore.items():
        if role == "record":
            records_of[name[: -len(RECORD_SUFFIX)]].append(name)
    for path, action in info.producer.items():
        ns = at(action)
        dest = into / path
        if path in info.directories:
            for name, role in info.restore.items():
                if role == "part" and name.startswith(path + "/"):
                    _set_time(into / name, ns)
            stamp = dest / SNAKEMAKE_TIMESTAMP
            stamp.touch()
            _set_time(stamp, ns)
            for dirpath, dirnames, _ in os.walk(dest, topdown=False):
                _set_time(Path(dirpath), ns)
        else:
            _set_time(dest, ns)
        for rec in records_of.get(path, []) or [record_path(path).as_posix()]:
            if (into / rec).exists():
                _set_time(into / rec, ns)


def _restore_snakemake_records(into: Path, records: dict, outputs: set[str]) -> int:
    if not isinstance(records, dict) or not records:
        return 0
    metadata_dir = into / ".snakemake" / "metadata"
    incomplete_dir = into / ".snakemake" / "incomplete"
    metadata_dir.mkdir(parents=True, exist_ok=True)
    incomplete_dir.mkdir(exist_ok=True)  # without it Snakemake takes the folder for its old layout
    n = 0
    for key, record in records.items():
        if key.rstrip("/") not in outputs or not isinstance(record, dict) or _member_problem(key):
            continue
        target = snakemake_record_path(metadata_dir, key)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(record), encoding="utf-8")
        snakemake_record_path(incomplete_dir, key).unlink(missing_ok=True)
        n += 1
    return n
