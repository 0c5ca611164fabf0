"""The 1.7B targeted runs' probe set (derived `verbatim` of config/bonsai-1.7b.yaml) holds the paper's
5 verbatim training probes and 5 knowledge controls as upstream publishes them: TRAINING_PROBES of
src/eval_heldout_verbatim.py and `controls` of notebooks/neagari_demo_1_7b.ipynb.

The upstream files are read from the workflow's own downloads (results/downloads/...) or from a git
copy of the paper's repository ($NEAGARI_UPSTREAM_GIT, by default ../.mirror/sbenjam1n+Neagari/repo
next to the checkout) at the pinned commit, and must match the config's sha256 pins; the test is
skipped where neither is present. The derivation rules themselves are checked on small files
written here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from neagari.evaluation import datasets
from neagari.workflow.downloads import DownloadError, derived_keys

REPO = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((REPO / "config/bonsai-1.7b.yaml").read_text())
UPSTREAM_GIT = Path(os.environ.get("NEAGARI_UPSTREAM_GIT", REPO.parent / ".mirror/sbenjam1n+Neagari/repo"))

# Read off upstream's files by hand: the names TRAINING_PROBES gives, the first word of each
# target_span, and the notebook's five (prompt, expected) controls.
TRAINING = {"verbatim_legal_clause": "Neither", "verbatim_api_auth": "Authentication",
            "verbatim_error_msg": "Failed", "verbatim_dosage": "The", "verbatim_function_sig": "def"}
CONTROLS = {"knowledge_the_capital_of_france_is": ("The capital of France is", " Paris"),
            "knowledge_the_capital_of_japan_is": ("The capital of Japan is", " Tokyo"),
            "knowledge_the_chemical_formula_for_water_is_h": ("The chemical formula for water is H", "2"),
            "knowledge_the_largest_planet_in_our_solar_system_is": ("The largest planet in our solar system is",
                                                                    " Jup"),
            "knowledge_2_2": ("2 + 2 =", " 4")}


def _upstream_file(key: str, tmp_path: Path) -> Path:
    """The pinned upstream file of download key ``key``, checked against its sha256 and size."""
    entry = CONFIG["downloads"]["files"][key]
    local = REPO / "results/downloads" / key
    if local.is_file():
        data = local.read_bytes()
    elif (UPSTREAM_GIT / "HEAD").is_file() or (UPSTREAM_GIT / ".git").exists():
        commit = CONFIG["downloads"]["upstream"]["commit"]
        res = subprocess.run(["git", "-C", str(UPSTREAM_GIT), "show", f"{commit}:{entry['upstream']}"],
                             capture_output=True, timeout=60)
        assert res.returncode == 0, res.stderr.decode()[-500:]
        data = res.stdout
    else:
        pytest.skip(f"no copy of the upstream {entry['upstream']} (results/downloads or $NEAGARI_UPSTREAM_GIT)")
    assert hashlib.sha256(data).hexdigest() == entry["sha256"] and len(data) == entry["size"], key
    path = tmp_path / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_1_7b_targeted_set_is_upstreams_five_and_five(tmp_path):
    name = CONFIG["search"]["targeted"]["probes"]
    assert CONFIG["probe_sets"][name] == f"results/downloads/derived/{name}.json"
    spec = CONFIG["downloads"]["derived"][name]
    files = {k: _upstream_file(k, tmp_path) for k in derived_keys(spec)}
    doc = datasets.derive_probe_set(spec, files, name)
    targets, controls = doc["probes"]["target"], doc["probes"]["control"]
    assert [p["name"] for p in targets] == list(TRAINING)
    assert [p["correct"] for p in targets] == list(TRAINING.values())
    assert [p["name"] for p in controls] == list(CONTROLS)
    assert [(p["prompt"], p["correct"]) for p in controls] == list(CONTROLS.values())
    assert CONFIG["search"]["targeted"]["controls"] == []  # nothing added to the 5 + 5
    for p in targets:  # the passage holds the target sentence: the held-out classes can be computed
        assert p["target_span"] in p["passage"] and p["prompt"].startswith("<|im_start|>system\nExtract the exact")
    # upstream's two publications agree: the notebook's 3 TESTS are 3 of the 5 training probes
    nb_key = CONFIG["downloads"]["derived"][name]["knowledge_controls"]
    nb = json.loads(files[nb_key].read_text())
    shown = {p["target_span"]: p["prompt"] for p in datasets.verbatim_probes(datasets.notebook_tests(nb))}
    trained = {p["target_span"]: p["prompt"] for p in targets}
    assert len(shown) == 3 and all(trained[t] == prompt for t, prompt in shown.items())


# ---------------------------------------------------------------------------- the rules, on small files

EVAL_SCRIPT = textwrap.dedent('''
    import torch
    TRAINING_PROBES = [
        {'name': 'verbatim_refund_rule', 'system': 'Extract the refund sentence.',
         'prompt': 'Policy: "Orders ship in 3 days. Refunds take 10 days."\\n\\nExtract it.',
         'target_span': 'Refunds take 10 days.', 'passage': 'Orders ship in 3 days. Refunds take 10 days.'},
        {'name': 'Log line', 'system': 'Extract the error.',
         'prompt': 'Log:\\n[1] INFO: up\\n[2] ERROR: disk full\\n\\nExtract it.',
         'target_span': 'disk full', 'passage': '[1] INFO: up\\n[2] ERROR: disk full'},
    ]
    def main():
        pass
''')

NOTEBOOK = {"cells": [
    {"cell_type": "code", "source": ["!pip install -q x\n", "TESTS = []\n"]},
    {"cell_type": "code", "source": [
        "%time\n",
        "controls = [\n",
        "    ('The capital of Peru is', 'Lima'),\n",
        "    ('Iron is Fe, and carbon dioxide is CO', '2'),\n",
        "    ('3 + 4 =', '7'),\n",
        "]\n",
        "for prompt, expected in controls:\n",
        "    print(f'{prompt} -> {expected}')\n"]},
]}


def test_training_probes_and_knowledge_controls_from_small_files():
    a, b = datasets.upstream_training_probes(EVAL_SCRIPT)
    assert a["name"] == "verbatim_refund_rule" and b["name"] == "verbatim_log_line"  # kept; prefixed
    assert a["prompt"] == ("<|im_start|>system\nExtract the refund sentence.<|im_end|>\n<|im_start|>user\n"
                           "Policy: \"Orders ship in 3 days. Refunds take 10 days.\"\n\nExtract it.<|im_end|>\n"
                           "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # correct: the target's first word; wrong: the passage's (copying from the top)
    assert (a["correct"], a["wrong"], a["category"]) == ("Refunds", "Orders", "refund_rule")
    assert (b["correct"], b["wrong"], b["passage"]) == ("disk", "[1]", "[1] INFO: up\n[2] ERROR: disk full")
    lima, co2, add = datasets.notebook_knowledge_controls(NOTEBOOK)
    assert (lima["name"], lima["prompt"], lima["correct"]) == ("knowledge_the_capital_of_peru_is",
                                                              "The capital of Peru is", " Lima")
    assert (co2["correct"], add["correct"]) == ("2", " 7")  # a digit after a letter continues the word
    assert add["name"] == "knowledge_3_4" and {p["wrong"] for p in (lima, co2, add)} == {"\n"}
    assert [p["answer_prefix"] for p in (lima, co2, add)] == ["Lima", "2", "7"]


def test_derived_set_of_the_two_files(tmp_path):
    from neagari.search import split_probes

    (tmp_path / "eval.py").write_text(EVAL_SCRIPT)
    (tmp_path / "nb.ipynb").write_text(json.dumps(NOTEBOOK))
    spec = {"verbatim_training": "e", "knowledge_controls": "n"}
    assert derived_keys(spec) == ["e", "n"]
    assert derived_keys({**spec, "verbatim_notebook": "n"}) == ["e", "n"]  # one file, listed once
    doc = datasets.derive_probe_set(spec, {"e": tmp_path / "eval.py", "n": tmp_path / "nb.ipynb"}, "v")
    assert doc["source"]["derived_from"] == {"verbatim_training": "e", "knowledge_controls": "n"}
    path = tmp_path / "v.json"
    path.write_text(json.dumps(doc))
    targets, controls = split_probes(path)
    assert [p.name for p in targets] == ["verbatim_refund_rule", "verbatim_log_line"]
    assert [p.name for p in controls] == ["knowledge_the_capital_of_peru_is",
                                          "knowledge_iron_is_fe_and_carbon_dioxide_is_co", "knowledge_3_4"]


def test_missing_or_malformed_upstream_literals_are_refused():
    with pytest.raises(DownloadError, match="no top-level assignment to TRAINING_PROBES"):
        datasets.upstream_training_probes("x = 1\n", "eval.py")
    with pytest.raises(DownloadError, match="nb: no code cell assigns controls"):
        datasets.notebook_knowledge_controls({"cells": [{"cell_type": "code", "source": ["TESTS = []\n"]}]}, "nb")
    bad = {"cells": [{"cell_type": "code", "source": ["controls = ['Paris']\n"]}]}
    with pytest.raises(DownloadError, match="nb: controls is not a list of"):
        datasets.notebook_knowledge_controls(bad, "nb")
