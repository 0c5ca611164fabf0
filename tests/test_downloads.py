"""Pinned downloads (neagari/workflow/downloads.py, rules/downloads.smk): local sources, checksum failures,
the unpinned refusal, the hub and URL transports with the network replaced, derived probe sets,
and the download rules run by Snakemake on local sources. No test touches the network."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.error import HTTPError, URLError

import pytest
import yaml

from neagari.evaluation import datasets
from neagari.workflow import downloads
from neagari.workflow.downloads import DownloadError, fetch

REPO = Path(__file__).resolve().parents[1]
COMMIT = "b451c5d9aabe4d0fcc1e7e4451260589537470b6"
UPSTREAM = {"repo": "sbenjam1n/Neagari", "commit": COMMIT}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def src(tmp_path) -> Path:
    p = tmp_path / "src" / "probes.json"
    p.parent.mkdir()
    p.write_bytes(b'{"probes": []}\n')
    return p


# ---------------------------------------------------------------------------- local sources


def test_local_path_pinned(tmp_path, src):
    dest = tmp_path / "out" / "probes.json"
    rec = fetch({"path": str(src), "sha256": sha(src.read_bytes())}, dest, key="downloads.files.p")
    assert dest.read_bytes() == src.read_bytes()
    assert rec["pinned"] and rec["sha256"] == sha(src.read_bytes()) and rec["bytes"] == src.stat().st_size
    assert not dest.with_name(dest.name + ".part").exists()


def test_mismatch_fails_and_removes_the_file(tmp_path, src):
    dest = tmp_path / "out" / "probes.json"
    dest.parent.mkdir()
    dest.write_text("an older download")  # whatever was there goes too
    with pytest.raises(DownloadError, match="sha256 mismatch: expected 0{64}, got " + sha(src.read_bytes())):
        fetch({"path": str(src), "sha256": "0" * 64}, dest, key="downloads.files.p")
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    assert src.exists()  # a local source is copied, never removed


def test_size_mismatch_fails(tmp_path, src):
    dest = tmp_path / "probes.json"
    with pytest.raises(DownloadError, match="size mismatch"):
        fetch({"path": str(src), "sha256": sha(src.read_bytes()), "size": 1}, dest, key="k")
    assert not dest.exists()


def test_unpinned_refused_without_allow(tmp_path, src):
    dest = tmp_path / "probes.json"
    with pytest.raises(DownloadError, match="refused, not pinned .*sha256 is null.*allow_unpinned"):
        fetch({"path": str(src), "sha256": None}, dest, key="downloads.files.p")
    assert not dest.exists()


def test_git_blob_id_is_what_git_hash_object_prints(tmp_path, src):
    big = tmp_path / "big.bin"
    big.write_bytes(bytes(range(256)) * 20000 + b"tail")  # past one read chunk
    for f in (src, big, tmp_path / "empty"):
        f.touch()
        want = subprocess.run(["git", "hash-object", str(f)], capture_output=True, text=True, check=True).stdout.strip()
        assert downloads.git_blob_id(f) == want


def test_a_git_blob_pin_fetches_and_logs_the_sha256_to_pin(tmp_path, src, caplog):
    """A repository file known by its git blob id only (its tree lists it, nobody hashed its bytes):
    pinned, fetched without allow_unpinned, and its sha256 logged with the config lines that pin it;
    other bytes under the same pin are refused and nothing is left."""
    blob = subprocess.run(["git", "hash-object", str(src)], capture_output=True, text=True, check=True).stdout.strip()
    spec = {"path": str(src), "sha256": None, "git_blob": blob}
    assert downloads.unpinned_reasons(spec) == []
    dest = tmp_path / "patch.json"
    with caplog.at_level(logging.WARNING, logger="neagari.workflow.downloads"):
        rec = fetch(spec, dest, key=["downloads", "files", "neagari/p.json"])
    assert dest.read_bytes() == src.read_bytes() and rec["pinned"] and rec["git_blob"] == blob
    assert f"sha256: {sha(src.read_bytes())}" in caplog.text and "neagari/p.json" in caplog.text
    other = tmp_path / "other.json"
    other.write_text("{}")
    with pytest.raises(DownloadError, match=f"git blob mismatch: expected {blob}, got "):
        fetch({**spec, "path": str(other)}, dest, key="k")
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    with pytest.raises(DownloadError, match="git_blob 'abc' is not 40 lower-case hex digits"):
        downloads.unpinned_reasons({**spec, "git_blob": "abc"})


def test_unpinned_allowed_logs_the_pin(tmp_path, src, caplog):
    dest = tmp_path / "probes.json"
    with caplog.at_level(logging.WARNING, logger="neagari.workflow.downloads"):
        rec = fetch({"path": str(src), "sha256": None}, dest, key=["downloads", "files", "neagari/p.json"],
                    allow_unpinned=True)
    assert dest.exists() and not rec["pinned"]
    want = sha(src.read_bytes())
    # the exact lines to paste into the config
    assert f"downloads:\n  files:\n    neagari/p.json:\n      sha256: {want}" in caplog.text


def test_missing_local_source(tmp_path):
    with pytest.raises(DownloadError, match="no such file"):
        fetch({"path": str(tmp_path / "nope"), "sha256": "0" * 64}, tmp_path / "x", key="k")


@pytest.mark.parametrize("spec, match", [
    ({"sha256": "0" * 64}, "exactly one of"),
    ({"path": "a", "url": "https://x", "sha256": "0" * 64}, "exactly one of"),
    ({"path": "a", "sha256": "ABC"}, "64 lower-case hex"),
])
def test_bad_specs(tmp_path, spec, match):
    with pytest.raises(DownloadError, match=match):
        fetch(spec, tmp_path / "x", key="k")


def test_pin_lines():
    assert downloads.pin_lines("models.bonsai-8b.download", "ab") == \
        "models:\n  bonsai-8b:\n    download:\n      sha256: ab"
    assert downloads.pin_lines(["downloads", "files", "a/b.json", "hub"], "c" * 40, "revision") == \
        "downloads:\n  files:\n    a/b.json:\n      hub:\n        revision: " + "c" * 40


# ---------------------------------------------------------------------------- URL / upstream


class FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_upstream_raw_url_and_check(tmp_path, monkeypatch):
    body = b'{"steps": []}'
    seen = []

    def opener(req, timeout):
        seen.append((req.full_url, timeout))
        return FakeResponse(body)

    monkeypatch.setattr(downloads, "urlopen", opener)
    dest = tmp_path / "manifest.json"
    rec = fetch({"upstream": "patches/v2_patches/manifest.json", "sha256": sha(body)}, dest,
                key="downloads.files.m", upstream=UPSTREAM)
    assert seen == [(f"https://raw.githubusercontent.com/sbenjam1n/Neagari/{COMMIT}/patches/v2_patches/manifest.json",
                     downloads.URL_TIMEOUT_S)]
    assert dest.read_bytes() == body and rec["commit"] == COMMIT and rec["pinned"]


def test_upstream_mismatch_removes(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "urlopen", lambda req, timeout: FakeResponse(b"tampered"))
    dest = tmp_path / "p.json"
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch({"upstream": "p.json", "sha256": sha(b"original")}, dest, key="k", upstream=UPSTREAM)
    assert not dest.exists() and not list(tmp_path.iterdir())


def test_upstream_branch_is_not_a_pin(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads, "urlopen", lambda req, timeout: pytest.fail("no network access expected"))
    with pytest.raises(DownloadError, match="upstream commit 'main' is not a commit id"):
        fetch({"upstream": "p.json", "sha256": "0" * 64}, tmp_path / "p", key="k",
              upstream={"repo": "sbenjam1n/Neagari", "commit": "main"})


def test_url_retries_transient_errors_not_404(tmp_path, monkeypatch):
    monkeypatch.setattr(downloads.time, "sleep", lambda s: None)
    calls = []

    def flaky(req, timeout):
        calls.append(1)
        if len(calls) == 1:
            raise URLError("connection reset")
        return FakeResponse(b"ok")

    monkeypatch.setattr(downloads, "urlopen", flaky)
    fetch({"url": "https://example.org/f", "sha256": sha(b"ok")}, tmp_path / "f", key="k")
    assert len(calls) == 2

    def missing(req, timeout):
        calls.append(1)
        raise HTTPError(req.full_url, 404, "Not Found", {}, None)

    calls.clear()
    monkeypatch.setattr(downloads, "urlopen", missing)
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch({"url": "https://example.org/g", "sha256": "0" * 64}, tmp_path / "g", key="k")
    assert len(calls) == 1 and not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------- hub


@pytest.fixture
def fake_hub(monkeypatch, tmp_path_factory):
    """hf_hub_download replaced by a cache of the hub's layout: blobs/<sha256> and
    snapshots/<commit>/<filename> linking to its blob; each call is recorded with all its arguments."""
    huggingface_hub = pytest.importorskip("huggingface_hub")
    cache = tmp_path_factory.mktemp("hf-cache")
    calls = []
    content = {"Bonsai-8B-Q1_0.gguf": b"GGUF fake model", "main/test-00000-of-00001.parquet": b"PAR1 fake"}

    def hf_hub_download(repo_id, filename, **kwargs):
        calls.append(dict(repo_id=repo_id, filename=filename, **kwargs))
        commit = kwargs.get("revision") if downloads.HEX40.match(str(kwargs.get("revision"))) else "1" * 40
        repo = cache / f"{kwargs.get('repo_type') or 'model'}s--{repo_id.replace('/', '--')}"
        blob = repo / "blobs" / sha(content[filename])
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(content[filename])
        snap = repo / "snapshots" / commit / filename
        snap.parent.mkdir(parents=True, exist_ok=True)
        if not snap.exists():
            snap.symlink_to(blob)
        return str(snap)

    class Meta:
        commit_hash = "1" * 40

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url: Meta())
    monkeypatch.setattr(huggingface_hub, "hf_hub_url", lambda **kw: "https://hub/" + kw["filename"])
    return calls, content, cache


def test_hub_model_pinned_through_the_user_cache(tmp_path, fake_hub):
    calls, content, cache = fake_hub
    rev = "4" * 40
    dest = tmp_path / "models" / "bonsai-8b.gguf"
    spec = {"hub": {"repo": "prism-ml/Bonsai-8B-gguf", "filename": "Bonsai-8B-Q1_0.gguf", "revision": rev},
            "sha256": sha(content["Bonsai-8B-Q1_0.gguf"])}
    rec = fetch(spec, dest, key="models.bonsai-8b.download")
    # the pinned revision, into the user's cache: no local_dir, no cache_dir, nothing forced
    assert calls == [dict(repo_id="prism-ml/Bonsai-8B-gguf", filename="Bonsai-8B-Q1_0.gguf", revision=rev,
                          repo_type="model")]
    assert dest.read_bytes() == content["Bonsai-8B-Q1_0.gguf"] and rec["resolved_revision"] == rev
    assert not dest.is_symlink()  # a file of its own (a hard link to the blob, or a copy)
    assert [p.name for p in dest.parent.iterdir()] == ["bonsai-8b.gguf"]  # no temporary files left
    blob = cache / "models--prism-ml--Bonsai-8B-gguf" / "blobs" / spec["sha256"]
    assert blob.read_bytes() == content["Bonsai-8B-Q1_0.gguf"]
    # a rerun (the rule's output removed) takes the file from the cache again; the cache stays
    dest.unlink()
    fetch(spec, dest, key="models.bonsai-8b.download")
    assert dest.read_bytes() == content["Bonsai-8B-Q1_0.gguf"] and blob.exists() and len(calls) == 2


def test_hub_copies_across_file_systems(tmp_path, fake_hub, monkeypatch):
    calls, content, _ = fake_hub

    def no_links(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(downloads.os, "link", no_links)
    dest = tmp_path / "m.gguf"
    fetch({"hub": {"repo": "prism-ml/Bonsai-8B-gguf", "filename": "Bonsai-8B-Q1_0.gguf", "revision": "4" * 40},
           "sha256": sha(content["Bonsai-8B-Q1_0.gguf"])}, dest, key="k")
    assert dest.read_bytes() == content["Bonsai-8B-Q1_0.gguf"] and not dest.is_symlink()


def test_hub_mismatch_is_refused_in_one_line(tmp_path, fake_hub):
    calls, content, cache = fake_hub
    dest = tmp_path / "out" / "gsm8k.parquet"
    spec = {"hub": {"repo": "openai/gsm8k", "repo_type": "dataset", "filename": "main/test-00000-of-00001.parquet",
                    "revision": "e" * 40}, "sha256": "0" * 64}
    with pytest.raises(DownloadError) as e:
        fetch(spec, dest, key="downloads.files.gsm8k")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"downloads.files.gsm8k -> {dest}: sha256 mismatch: expected {'0' * 64}, "
                                              f"got {sha(content['main/test-00000-of-00001.parquet'])}")
    assert "the Hugging Face cache holds these bytes at " + str(cache) in msg
    assert calls[0]["repo_type"] == "dataset" and calls[0]["revision"] == "e" * 40 and "local_dir" not in calls[0]
    assert not dest.exists() and not list(dest.parent.iterdir())
    # the cache entry is the hub's business, not ours: left as it is
    assert (cache / "datasets--openai--gsm8k" / "blobs" / sha(content["main/test-00000-of-00001.parquet"])).exists()


def test_hub_errors_are_one_line(tmp_path, fake_hub, monkeypatch):
    import huggingface_hub

    def offline(**kw):
        raise OSError("Name or service not known\nmore detail")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    spec = {"hub": {"repo": "prism-ml/Bonsai-1.7B-gguf", "filename": "Bonsai-1.7B-Q1_0.gguf", "revision": "2" * 40},
            "sha256": "0" * 64}
    with pytest.raises(DownloadError, match=r"^hub prism-ml/Bonsai-1.7B-gguf/Bonsai-1.7B-Q1_0.gguf at 2{40}: "
                                            r"OSError: Name or service not known$"):
        fetch(spec, tmp_path / "m.gguf", key="k")
    assert not list(tmp_path.iterdir())


def test_hub_branch_needs_allow_and_reports_commit(tmp_path, fake_hub, caplog):
    spec = {"hub": {"repo": "TAUR-Lab/MuSR", "repo_type": "dataset", "filename": "main/test-00000-of-00001.parquet",
                    "revision": "refs/convert/parquet"}, "sha256": None}
    with pytest.raises(DownloadError, match="hub revision 'refs/convert/parquet' is not a commit id"):
        fetch(spec, tmp_path / "m.parquet", key="downloads.files.musr")
    assert fake_hub[0] == []  # refused before any transfer
    with caplog.at_level(logging.WARNING, logger="neagari.workflow.downloads"):
        rec = fetch(spec, tmp_path / "m.parquet", key="downloads.files.musr", allow_unpinned=True)
    assert rec["resolved_revision"] == "1" * 40  # read off the cache's snapshot directory
    assert "    musr:\n      hub:\n        revision: " + "1" * 40 in caplog.text


# ---------------------------------------------------------------------------- derived probe sets

SEARCH_SCRIPT = textwrap.dedent('''
    import os
    DEFAULT_SEARCH_LAYERS = [1, 2]
    DEFAULT_CONTROL_PROBES = [
        {'prompt': 'Water freezes at', 'correct': ' zero', 'wrong': ' ten', 'name': 'freeze'},
        {'prompt': '3 + 3 =', 'correct': ' 6', 'wrong': ' 7', 'name': 'add'},
    ]
    def main():
        pass
''')

NOTEBOOK = {"cells": [
    {"cell_type": "markdown", "source": ["# demo\n"]},
    {"cell_type": "code", "source": ["!pip install -q x\n", "import os\n"]},
    {"cell_type": "code", "source": [
        "TESTS = [\n",
        "    {'name': 'Refund rule', 'system': 'Extract the refund sentence.',\n",
        "     'prompt': 'Passage: \"Orders ship in 3 days. Refunds take 10 days.\"\\n\\nExtract it.',\n",
        "     'target': 'Refunds take 10 days.'},\n",
        "]\n",
        "def run_test(engine, test):\n",
        "    return None\n"]},
]}


def test_upstream_controls_and_notebook_prompts():
    controls = datasets.upstream_default_controls(SEARCH_SCRIPT)
    assert [c["name"] for c in controls] == ["freeze", "add"] and controls[0]["correct"] == " zero"
    tests = datasets.notebook_tests(NOTEBOOK)
    [probe] = datasets.verbatim_probes(tests)
    assert probe["prompt"] == ("<|im_start|>system\nExtract the refund sentence.<|im_end|>\n<|im_start|>user\n"
                               "Passage: \"Orders ship in 3 days. Refunds take 10 days.\"\n\nExtract it.<|im_end|>\n"
                               "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert (probe["correct"], probe["wrong"], probe["name"]) == ("Refunds", "Orders", "verbatim_refund_rule")
    with pytest.raises(DownloadError, match="no top-level assignment to DEFAULT_CONTROL_PROBES"):
        datasets.upstream_default_controls("x = 1\n")


def test_benchmark_probes_are_seeded_samples(tmp_path):
    pl = pytest.importorskip("polars")
    mmlu = pl.DataFrame({"question": [f"Q{i}?" for i in range(20)], "subject": ["law"] * 20,
                         "choices": [["a", "b", "c", "d"]] * 20, "answer": [i % 4 for i in range(20)]})
    mmlu.write_parquet(tmp_path / "mmlu.parquet")
    musr = [{"narrative": "A long story.", "question": "Who did it?", "choices": "['Ann', 'Bob']",
             "answer_index": i % 2} for i in range(5)]
    (tmp_path / "musr.jsonl").write_text("".join(json.dumps(r) + "\n" for r in musr))
    (tmp_path / "xor_search.py").write_text(SEARCH_SCRIPT)
    files = {"x": tmp_path / "xor_search.py", "m": tmp_path / "mmlu.parquet", "r": tmp_path / "musr.jsonl"}
    spec = {"upstream_controls": "x", "samples": [{"file": "r", "format": "musr", "n": 2},
                                                  {"file": "m", "format": "mmlu", "n": 3}], "seed": 7}
    doc = datasets.derive_probe_set(spec, files, "base_controls")
    assert doc == datasets.derive_probe_set(spec, files, "base_controls")  # deterministic
    controls = doc["probes"]["control"]
    assert list(doc["probes"]) == ["control"] and len(controls) == 2 + 2 + 3
    musr_probe = controls[2]
    assert musr_probe["prompt"] == "A long story.\n\nWho did it?\nA. Ann\nB. Bob\nAnswer:"
    idx = int(musr_probe["name"].split("_")[1])
    assert musr_probe["correct"] == " " + "AB"[idx % 2] and musr_probe["wrong"] != musr_probe["correct"]
    mm = controls[4]
    i = int(mm["name"].rsplit("_", 1)[1])
    assert mm["prompt"].startswith(f"Q{i}?\nA. a\nB. b") and mm["correct"] == " " + "ABCD"[i % 4]
    other = datasets.derive_probe_set(dict(spec, seed=8), files, "base_controls")
    assert other["probes"]["control"][4:] != controls[4:]
    with pytest.raises(DownloadError, match="5 samples asked of 3|asked of"):
        datasets.sample_benchmark_probes("musr", musr[:3], 5, 0, "r")


def test_benchmark_probes_by_name(tmp_path):
    """Items named as upstream's patch records name them: the row within the MMLU subject, the row of
    the one-domain MuSR file; the name is kept, in the order given."""
    pl = pytest.importorskip("polars")
    subjects = ["anatomy"] * 3 + ["astronomy"] * 4
    mmlu = pl.DataFrame({"question": [f"Q{i}?" for i in range(7)], "subject": subjects,
                         "choices": [["a", "b", "c", "d"]] * 7, "answer": [i % 4 for i in range(7)]})
    mmlu.write_parquet(tmp_path / "mmlu.parquet")
    musr = [{"narrative": f"Story {i}.", "question": "Who?", "choices": "['Ann', 'Bob']", "answer_index": i % 2}
            for i in range(5)]
    (tmp_path / "op.jsonl").write_text("".join(json.dumps(r) + "\n" for r in musr))
    files = {"m": tmp_path / "mmlu.parquet", "r": tmp_path / "op.jsonl"}
    spec = {"samples": [{"file": "r", "format": "musr", "names": ["musr_object_placements_0004",
                                                                  "musr_object_placements_0001"]},
                        {"file": "m", "format": "mmlu", "names": ["mmlu_astronomy_0002", "mmlu_anatomy_0000"]}]}
    controls = datasets.derive_probe_set(spec, files, "base_controls")["probes"]["control"]
    assert [c["name"] for c in controls] == ["musr_object_placements_0004", "musr_object_placements_0001",
                                             "mmlu_astronomy_0002", "mmlu_anatomy_0000"]
    assert controls[0]["prompt"].startswith("Story 4.") and controls[1]["prompt"].startswith("Story 1.")
    assert controls[2]["prompt"].startswith("Q5?") and controls[2]["correct"] == " B"  # 3 anatomy rows first
    assert controls[3]["prompt"].startswith("Q0?") and controls[3]["category"] == "mmlu:anatomy"
    rows = datasets.read_rows(tmp_path / "mmlu.parquet")
    for names, match in [(["mmlu_anatomy_0003"], "row 3 asked of 3 anatomy rows"),
                         (["mmlu_law_0000"], "no subject 'law'"), (["musr_x_0"], "not mmlu_<group>_<row>"),
                         (["mmlu_anatomy_0000", "mmlu_anatomy_0000"], "item names repeat")]:
        with pytest.raises(DownloadError, match=match):
            datasets.named_benchmark_probes("mmlu", rows, names, "m")
    with pytest.raises(DownloadError, match="one MuSR file holds one domain"):
        datasets.named_benchmark_probes("musr", musr, ["musr_murder_mysteries_0000", "musr_object_placements_0000"],
                                        "r")


def test_derived_documents_load_as_probes(tmp_path):
    from neagari.search.probes import load_probes
    from neagari.search import split_probes

    (tmp_path / "x.py").write_text(SEARCH_SCRIPT)
    (tmp_path / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    doc = datasets.derive_probe_set({"verbatim_notebook": "nb", "upstream_controls": "x"},
                                     {"nb": tmp_path / "nb.ipynb", "x": tmp_path / "x.py"}, "verbatim")
    path = tmp_path / "verbatim.json"
    path.write_text(json.dumps(doc))
    targets, controls = split_probes(path)
    assert [p.name for p in targets] == ["verbatim_refund_rule"] and [p.name for p in controls] == ["freeze", "add"]
    assert len(load_probes(path)) == 3


# ---------------------------------------------------------------------------- the rules


def run_snakemake(workdir: Path, target: str, *args, timeout=300) -> subprocess.CompletedProcess:
    """Snakemake on one target (first: --configfile and --config take several values)."""
    cmd = [sys.executable, "-m", "snakemake", target, "--cores", "1", "--snakefile", str(workdir / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def download_workflow(tmp_path):
    """A workflow of the repository's common, downloads and models rules with local sources."""
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "xor_search.py").write_text(SEARCH_SCRIPT)
    (sources / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    (sources / "model.gguf").write_bytes(b"not really a model")
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f'''
        include: "{REPO}/rules/common.smk"
        include: "{REPO}/rules/downloads.smk"
        include: "{REPO}/rules/models.smk"
    '''))

    def source(name, pinned=True):
        p = sources / name
        return {"path": str(p), "sha256": sha(p.read_bytes()) if pinned else None}

    config = {
        "run_name": "downloads-test", "seed": 0, "device": "cpu",
        "models": {"m": {"source": "download", "download": source("model.gguf")}},
        "probe_sets": {"verbatim": "results/downloads/derived/verbatim.json"},
        "downloads": {"upstream": UPSTREAM, "files": {
            "neagari/src/xor_search.py": source("xor_search.py"),
            "neagari/notebooks/demo.ipynb": source("nb.ipynb", pinned=False)},
            "derived": {"verbatim": {"verbatim_notebook": "neagari/notebooks/demo.ipynb",
                                     "upstream_controls": "neagari/src/xor_search.py"}}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


def test_rules_fetch_check_and_derive(download_workflow):
    wd = download_workflow
    refused = run_snakemake(wd, "downloads")
    assert refused.returncode != 0
    log = (wd / "logs/downloads/neagari/notebooks/demo.ipynb.log").read_text()
    assert "refused, not pinned" in log
    assert not (wd / "results/downloads/neagari/notebooks/demo.ipynb").exists()

    ok = run_snakemake(wd, "downloads", "--config", 'downloads={"allow_unpinned": true}')
    assert ok.returncode == 0, ok.stderr[-3000:]
    nb_sha = sha((wd / "sources/nb.ipynb").read_bytes())
    log = (wd / "logs/downloads/neagari/notebooks/demo.ipynb.log").read_text()
    assert f"    neagari/notebooks/demo.ipynb:\n      sha256: {nb_sha}" in log
    assert (wd / "results/models/m.gguf").read_bytes() == b"not really a model"
    doc = json.loads((wd / "results/downloads/derived/verbatim.json").read_text())
    assert [p["name"] for p in doc["probes"]["target"]] == ["verbatim_refund_rule"]
    for out in ("results/models/m.gguf", "results/downloads/derived/verbatim.json",
                "results/downloads/neagari/src/xor_search.py"):
        record = json.loads((wd / (out + ".prov.json")).read_text())
        assert record["output"]["sha256"] == sha((wd / out).read_bytes())


def test_rule_removes_a_mismatched_download(download_workflow):
    wd = download_workflow
    (wd / "sources/model.gguf").write_bytes(b"something else")  # no longer the pinned bytes
    res = run_snakemake(wd, "results/models/m.gguf")
    assert res.returncode != 0
    assert "sha256 mismatch" in (wd / "logs/models/m.download.log").read_text()
    assert not (wd / "results/models/m.gguf").exists()
    models = wd / "results/models"  # no partial file or temporary folder left behind
    assert not models.exists() or not list(models.iterdir())


def test_a_relative_local_source_is_found_from_any_working_directory(download_workflow):
    """A relative ``path:`` names the working directory's file where there is one, else the
    repository's (as every other path of the config does): the run here is in a directory that
    is not the repository and lacks the file."""
    wd = download_workflow
    config = yaml.safe_load((wd / "config.yaml").read_text())
    config["models"]["m"]["download"] = {"path": "LICENSE", "sha256": sha((REPO / "LICENSE").read_bytes())}
    (wd / "config.yaml").write_text(yaml.safe_dump(config))
    res = run_snakemake(wd, "results/models/m.gguf")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (wd / "results/models/m.gguf").read_bytes() == (REPO / "LICENSE").read_bytes()


@pytest.mark.parametrize("name", ["bonsai-8b", "bonsai-1.7b"])
def test_paper_configs_validate_and_pin_what_they_can(name):
    import jsonschema

    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    config = yaml.safe_load((REPO / f"config/{name}.yaml").read_text())
    jsonschema.Draft202012Validator(schema).validate(config)
    [model] = config["models"].values()
    assert model["source"] == "download" and downloads.unpinned_reasons(model["download"]) == []
    files = config["downloads"]["files"]
    for key, spec in files.items():
        if "upstream" in spec:
            assert downloads.HEX40.match(config["downloads"]["upstream"]["commit"])
    for spec in config["downloads"].get("derived", {}).values():
        assert all(k in files for k in downloads.derived_keys(spec))
    produced = {downloads.download_path(k) for k in files}
    produced |= {downloads.derived_path(k) for k in config["downloads"].get("derived", {})}
    used = list(config["probe_sets"].values()) + list(config.get("published_patches", {}).values())
    assert set(used) <= produced
    assert config["search"]["pipeline"]["order"] == ["editing", "instruction", "tool_calling", "math", "coding"][
        :len(config["search"]["pipeline"]["order"])]
