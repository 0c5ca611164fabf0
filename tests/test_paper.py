"""neagari.report.paper: number formats, tables from DataFrames, provenance blocks from record dicts, the
Markdown to HTML, and a template whose number comes from a file ending up in both outputs."""

from __future__ import annotations

import json
import os
import re

import polars as pl
import pytest

from neagari.report import paper
from neagari.report.paper import Renderer, TableItem
from neagari.workflow.provenance import write_records

RECORD = {
    "rule": "audit_search", "wildcards": {"model": "tiny-qat"}, "params": {},
    "config": {"search": {"layers": [0]}},
    "inputs": [{"name": "runs", "path": "results/search/tiny-qat/pass1/math/patch.json", "sha256": "ab" * 32},
               {"path": "results/models/tiny-qat.gguf", "sha256": "cd" * 32}],
    "script": {"path": "scripts/audit_search.py", "sha256": "ef" * 32},
    "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": True},
    "finished_at": "2026-01-01T00:00:00+00:00",
    "output": {"path": "results/audits/tiny-qat/acceptance.parquet", "sha256": "12" * 32},
}


def test_number_formats():
    assert paper.pct(0.469) == "46.9%"
    assert paper.pct(None) == paper.MISSING
    assert paper.pp(0.76) == "+0.8 pp"
    assert paper.num(2252) == "2,252"
    assert paper.num(0.000170, 3) == "0.00017"
    assert paper.signed(-0.033) == "-0.033"
    assert paper.plural(1, "flip") == "1 flip" and paper.plural(3, "flip") == "3 flips"
    assert paper.duration(42) == "42 s" and paper.duration(34920) == "9.7 h"


def test_column_kinds_follow_names_and_dtypes():
    kind = paper.column_kind
    assert kind("rate", pl.Float64) == "fraction"
    assert kind("rate_at_200", pl.Float64) == "fraction"
    assert kind("trained_ci_lo", pl.Float64) == "fraction"
    assert kind("ci_lo_pp", pl.Float64) == "pp"
    assert kind("threshold_pp", pl.Float64) == "float" and kind("threshold", pl.Float64) == "fraction"
    assert kind("base_accuracy_pct", pl.Float64) == "percent_value"
    assert kind("pct_controls_improved", pl.Float64) == "percent_value"
    assert kind("mean_delta", pl.Float64) == "float"
    assert kind("flips", pl.Int64) == "int"
    assert kind("passed", pl.Boolean) == "bool"


def test_table_from_dataframe_markdown_and_html():
    df = pl.DataFrame({"domain": ["editing", "a|b"], "flips": [469, 1238], "rate": [0.469, None],
                       "passed": [True, False]})
    md = paper.table_markdown(TableItem(df)).splitlines()
    assert md[0] == "| domain | flips | rate | passed |"
    assert md[1] == "|---|---:|---:|---|"
    assert md[2] == "| editing | 469 | 46.9% | yes |"
    assert md[3] == f"| a\\|b | 1,238 | {paper.MISSING} | no |"  # a pipe cannot break the row
    html = paper.table_html(TableItem(df))
    assert html.count("<tr>") == 3 and "<th class=\"num\">flips</th>" in html
    assert "<td class=\"num\">46.9%</td>" in html


def test_table_cells_escape_and_clean_model_output():
    df = pl.DataFrame({"output": ["<b>x</b>\nnext\x01line"]})
    html = paper.table_html(TableItem(df))
    assert "&lt;b&gt;x&lt;/b&gt; next\ufffdline" in html and "<b>" not in html


def test_concat_tables_adds_model_column_unless_present():
    a = TableItem(pl.DataFrame({"run": ["x"], "rate": [0.5]}), ["a.parquet"])
    b = TableItem(pl.DataFrame({"run": ["y"], "rate": [0.25]}), ["b.parquet"])
    both = paper.concat_tables({"qat": a, "fp": b})
    assert both.df.columns == ["model", "run", "rate"]
    assert both.df["model"].to_list() == ["qat", "fp"] and both.sources == ["a.parquet", "b.parquet"]
    own = TableItem(pl.DataFrame({"model": ["m-null"], "rate": [0.1]}))
    assert paper.concat_tables({"qat": own}).df.columns == ["model", "rate"]


def test_provenance_block_from_record():
    html = paper.provenance_html("results/audits/tiny-qat/acceptance.parquet", RECORD,
                                 "../audits/tiny-qat/acceptance.parquet.prov.json")
    assert html.startswith('<details class="prov">')
    assert "rule <code>audit_search</code>, commit 0123456789 (dirty tree)" in html
    assert "<code>results/models/tiny-qat.gguf</code></td><td><code>cdcdcdcdcdcd</code>" in html
    assert "inputs (2)" in html and "&quot;layers&quot;" in html  # the config subset, escaped
    assert 'href="../audits/tiny-qat/acceptance.parquet.prov.json"' in html
    assert "\n\n" not in html  # one Markdown block: no blank line may split it
    md = paper.provenance_markdown("results/x.parquet", RECORD, "../x.parquet.prov.json")
    assert "rule `audit_search`" in md and "sha256 `121212121212`" in md and "[record](../x.parquet.prov.json)" in md
    assert "no record" in paper.provenance_html("results/y.parquet", None, "y")


def test_load_record_reads_the_sidecar(tmp_path):
    out = tmp_path / "t.parquet"
    out.write_bytes(b"x")
    assert paper.load_record(out) is None
    (tmp_path / "t.parquet.prov.json").write_text(json.dumps(RECORD))
    assert paper.load_record(out)["rule"] == "audit_search"


def test_markdown_to_html():
    body, toc = paper.markdown_to_html(
        "# Title\n\n## Null baseline (§7.1.1) {#null}\n\nA *b* **c** `d_e` [f](#null) 3 < 4.\n\n"
        "- one\n  more\n- two\n\n1. first\n2. second\n\n> **Verdict:** passed.\n\n<div>raw</div>\n\n"
        "| a | b |\n|---|---:|\n| x | 2 |\n\n```\nx < y\n```\n\n## Again {#null}\n")
    flat = re.sub(r">\n+<", "><", body)  # markdown-it puts block tags on lines of their own
    assert '<h2 id="null">Null baseline (§7.1.1)</h2>' in flat
    assert "<p>A <em>b</em> <strong>c</strong> <code>d_e</code> <a href=\"#null\">f</a> 3 &lt; 4.</p>" in flat
    assert "<ul><li>one\nmore</li><li>two</li></ul>" in flat and "<ol><li>first</li><li>second</li></ol>" in flat
    assert "<blockquote><p><strong>Verdict:</strong> passed.</p></blockquote>" in flat
    assert "<div>raw</div>" in flat
    assert '<thead><tr><th>a</th><th style="text-align:right">b</th></tr></thead>' in flat
    assert "<pre><code>x &lt; y\n</code></pre>" in flat
    assert '<h2 id="null-x">Again</h2>' in flat  # anchors stay unique
    assert toc == [(1, "title", "Title"), (2, "null", "Null baseline (§7.1.1)"), (2, "null-x", "Again")]
    assert paper.inline("*a* `b` [c](d.json)") == '<em>a</em> <code>b</code> <a href="d.json">c</a>'


def _template(tmp_path):
    t = tmp_path / "paper.md.j2"
    t.write_text("## Result {#r}\n\nThe trained model accepted {{ m.rate|pct }} of "
                 "{{ m.iterations|num }} moves {{ cite(path) }}.\n\n{{ table('null', 'Null baseline.') }}\n",
                 encoding="utf-8")
    return t


def test_number_from_a_file_reaches_both_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "audits").mkdir(parents=True)
    path = "results/audits/null_baseline.parquet"
    pl.DataFrame({"model": ["trained"], "accepted": [234], "iterations": [500],
                  "rate": [234 / 500]}).write_parquet(path)
    write_records([path], rule="audit_search", inputs=[], params={}, wildcards={}, config={"seed": 0},
                  script=None, started_at="2026-01-01T00:00:00+00:00")
    df = pl.read_parquet(path)
    context = {"m": df.row(0, named=True), "path": path}
    tables = {"null": TableItem(df, [path])}
    md = paper.render_template(_template(tmp_path), context, Renderer("md", "results/paper", tables, {}))
    assert "accepted 46.8% of 500 moves [source](../audits/null_baseline.parquet.prov.json)." in md
    assert "**Table 1.** Null baseline." in md and "| trained | 234 | 500 | 46.8% |" in md
    assert "rule `audit_search`" in md
    html_md = paper.render_template(_template(tmp_path), context, Renderer("html", "results/paper", tables, {}))
    css, shell = tmp_path / "p.css", tmp_path / "p.html.j2"
    css.write_text("body { color: black; }")
    shell.write_text("<style>{{ css }}</style>{% for l, a, t in toc %}<a href='#{{ a }}'>{{ t }}</a>{% endfor %}"
                     "{{ body }}{{ footer }}")
    page = paper.render_page(html_md, shell, css, title="t")
    assert '46.8% of 500 moves <a href="../audits/null_baseline.parquet.prov.json">source</a>.' in page
    assert '<td class="num">46.8%</td>' in page
    assert "<style>body { color: black; }</style>" in page and "<a href='#r'>Result</a>" in page
    assert '<details class="prov">' in page and "rule <code>audit_search</code>" in page


def test_missing_table_and_figure_say_so(tmp_path):
    r = Renderer("html", tmp_path, {}, {})
    assert "No rows" in r.table("absent", "A caption")
    assert "Not made" in r.figure("absent", "A caption")
    assert r.n_tables == 0 and r.n_figures == 0
    with pytest.raises(ValueError):
        Renderer("pdf", tmp_path, {}, {})


def test_figure_is_embedded_with_its_natural_size(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    (tmp_path / "results" / "figures").mkdir(parents=True)
    png = "results/figures/a.png"
    fig, ax = plt.subplots(figsize=(3, 2))
    fig.savefig(png, dpi=200)
    plt.close(fig)
    html = Renderer("html", "results/paper", {}, {"a": {"qat": png}}).figure("a", "Caption *x*.")
    assert 'src="data:image/png;base64,' in html and "flex: 0 1 300px" in html
    assert 'href="../figures/a.pdf"' in html and "<em>x</em>" in html and "no record" in html


# ---------------------------------------------------------------------------- the paper's published figures

from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from neagari import stats  # noqa: E402
from neagari.report import facts, published  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "resources/paper/published.yaml"
TEMPLATE = REPO / "resources/paper/paper.md.j2"
# The project's restatement of the paper: beside the repository (../shared/PAPER.md), or named by
# NEAGARI_PAPER_MD; the checks against its text are skipped where it is not at hand.
PAPER_MD = Path(os.environ.get("NEAGARI_PAPER_MD", REPO.parent / "shared" / "PAPER.md"))
NUMBER = re.compile(r"[−+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[−+-]?\d+(?:\.\d+)?")


def numbers_in(text: str) -> list[float]:
    """Every number of a text as the paper writes them: thousands commas, U+2212 minus, a sign."""
    return [float(m.replace("−", "-").replace(",", "")) for m in NUMBER.findall(text)]


def _entries():
    return yaml.safe_load(PUBLISHED.read_text(encoding="utf-8"))["entries"]


def test_number_parser_reads_the_papers_notation():
    assert numbers_in("1,238 flips, −0.08 to +1.60 pp, 14,696 (49.0%), 30,000:1") == \
        [1238, -0.08, 1.6, 14696, 49.0, 30000, 1]


def test_published_entries_are_well_formed():
    keys = [e["key"] for e in _entries()]
    assert len(keys) == len(set(keys))
    for e in _entries():
        assert {"key", "value", "unit", "section", "quote"} <= set(e), e
        assert e["section"].startswith("§"), e
        assert isinstance(e["value"], (int, float)) and not isinstance(e["value"], bool), e


@pytest.mark.skipif(not PAPER_MD.is_file(), reason="PAPER.md not beside the repository")
def test_every_published_value_is_in_the_papers_text():
    text = " ".join(PAPER_MD.read_text(encoding="utf-8").split())
    in_paper = set(numbers_in(text))
    for e in _entries():
        if "derived" in e:
            continue
        quote = " ".join(e["quote"].split())
        assert quote in text, f"{e['key']}: quote not in PAPER.md: {quote!r}"
        assert e["value"] in numbers_in(quote), f"{e['key']}: {e['value']} not in its quote {quote!r}"
        assert e["value"] in in_paper


def test_derived_published_values_are_their_arithmetic():
    values = {e["key"]: e["value"] for e in _entries()}
    derived = [e for e in _entries() if "derived" in e]
    assert derived
    for e in derived:
        a, op, b = e["derived"].split()
        result = values[a] - values[b] if op == "-" else values[a] + values[b]
        assert e["value"] == pytest.approx(result, abs=1e-9), e["key"]


def _keys_used(text: str) -> set[str]:
    return set(re.findall(r"""(?:paper|p)\.(?:text|value|model_of|section|entry)\(\s*["']([^"']+)["']""", text))


def test_every_key_the_page_uses_is_published():
    p = published.Published(PUBLISHED)
    used = _keys_used(TEMPLATE.read_text(encoding="utf-8")) | \
        _keys_used((REPO / "neagari/report/published.py").read_text(encoding="utf-8"))
    assert len(used) > 20
    assert sorted(k for k in used if k not in p) == []
    # keys the tables build from the run's names, for the paper's domains and fitness functions
    for domain in ("editing", "instruction", "tool_calling", "math", "coding"):
        for field in ("iterations", "lambda", "flips", "rate"):
            assert f"pass1.{domain}.{field}" in p
        assert f"pass2.{domain}.scale_share" in p
    for fitness in ("borderline", "focused"):
        for field in ("accepted", "rate", "crossings", "first_crossing", "controls_broken"):
            assert f"targeted.{fitness}.{field}" in p
    for lam in (0.75, 1.5, 3.0):
        assert f"lambda_sweep.editing.{lam}.rate" in p
    for bench in set(published.BENCH_KEYS.values()):
        assert {f"bench.{bench}.{f}" for f in ("n", "base", "patched", "delta_pp")} <= set(p.entries)


def test_published_values_and_text():
    p = published.Published(PUBLISHED)
    assert p.value("pass1.editing.rate") == pytest.approx(0.469)
    assert p.text("pass1.editing.rate") == "46.9%" and p.text("pass1.math.rate") == "27.0%"
    assert p.text("pass1.editing.fitness") == "+0.0792"
    assert p.text("pass1.total.flips") == "1,238" and p.text("targeted.iterations") == "30,000"
    assert p.text("null.gap_pp") == "+30.0 pp"
    assert p.text("crossing.editing.mean_delta") == "0.000170"
    assert p.text("bench.gsm8k.ci_lo_pp") == "-0.08 pp" and p.text("bench.gsm8k.ci_hi_pp") == "+1.60 pp"
    assert p.text("targeted.dosage_gap") == "-1.23"
    assert p.get("pass1.verbatim.rate") is None
    with pytest.raises(KeyError):
        p.text("pass1.verbatim.rate")


def test_paper_models_recognised_from_their_download():
    p = published.Published(PUBLISHED)
    hub = {"source": "download", "download": {"hub": {"repo": "prism-ml/Bonsai-1.7B-gguf",
                                                       "filename": "Bonsai-1.7B-Q1_0.gguf"}}}
    assert p.paper_model(hub) == "bonsai-1.7b"
    assert p.paper_model({"source": "download", "download": {"path": "/m/Bonsai-8B.gguf"}}) == "bonsai-8b"
    assert p.paper_model({"source": "download", "download": {"path": "/m/other.gguf"}}) is None
    assert p.paper_model({"source": "embedded", "variant": "qat"}) is None


def test_models_described_with_their_shape():
    arch = {"n_layer": 4, "hidden": 256, "ffn": 768, "n_head": 4, "n_kv_head": 2, "head_dim": 64,
            "tied_embeddings": False}
    config = {"models": {"e-qat": {"source": "embedded", "variant": "qat"},
                         "e-fp": {"source": "embedded", "variant": "fp"},
                         "b": {"source": "download", "download": {"hub": {"repo": "prism-ml/Bonsai-8B-gguf"}}}},
              "embedded": {"architecture": arch, "tokenizer": {"vocab_size": 2048}}}
    d = {m["name"]: m for m in published.describe_models(config, ["e-qat", "b"], published.Published(PUBLISHED))}
    # embeddings and head 2 * 2048 * 256, per layer q/o 2 * 256 * 256, k/v 2 * 256 * 128, MLP 3 * 256 * 768
    assert d["e-qat"]["weights"] == 2 * 2048 * 256 + 4 * (2 * 256 * 256 + 2 * 256 * 128 + 3 * 256 * 768)
    assert d["e-qat"]["searched"] and not d["e-fp"]["searched"] and d["e-fp"]["same_as"] == "e-qat"
    assert d["b"]["paper_model"] == "Bonsai 8B" and d["b"]["where"] == "prism-ml/Bonsai-8B-gguf"


def test_scale_against_the_papers_iteration_counts():
    p = published.Published(PUBLISHED)
    runs = pl.DataFrame({"stage": ["pass1", "pass1", "pass1", "targeted", "nullbase", "nullbase", "lambda"],
                         "run": ["editing", "math", "verbatim", "focused", "trained-s0", "null-s0", "editing-lam3.0"],
                         "domain": ["editing", "math", "verbatim", "verbatim", "editing", "editing", "editing"],
                         "budget": [150, 60, 12, 400, 100, 100, 100],
                         "iterations": [150, 41, 12, 400, 100, 100, 100]})
    s = published.scale(runs, p)
    assert [i["domain"] for i in s["pass1"]["items"]] == ["editing", "math"]  # no paper count for verbatim
    assert (s["pass1"]["min"], s["pass1"]["max"]) == (pytest.approx(0.15), pytest.approx(0.3))
    assert s["targeted"]["min"] == pytest.approx(400 / 30000) and s["targeted"]["paper_model"] == "Bonsai 1.7B"
    assert len(s["nullbase"]["items"]) == 1 and s["nullbase"]["min"] == pytest.approx(0.2)
    assert s["stopped_early"] == 1 and not s["all_paper_scale"]
    full = pl.DataFrame({"stage": ["targeted"], "run": ["focused"], "domain": ["verbatim"], "budget": [30000],
                         "iterations": [30000]})
    assert published.scale(full, p)["all_paper_scale"]


def _model_facts(**over):
    m = {"overlap": [], "random_flip": [], "rank2_max": None, "quartiles_pass2": [], "fitness_modes": [],
         "null": {"passed": False, "trained_ci_lo": 0.40, "trained_ci_hi": 0.89, "null_ci_lo": 0.31,
                  "null_ci_hi": 0.83, "threshold_pp": 10.0, "trained_seeds": 1, "trained_iterations": 10,
                  "gap_pp": 10.0, "trained_rate_sd": None, "null_rate_sd": None, "intervals_disjoint": False}}
    m.update(over)
    return m


def test_open_questions_say_what_the_run_shows():
    q = facts.open_questions(_model_facts())
    assert q["overlap"]["status"] == "not_measured" and q["random_flip"]["status"] == "not_measured"
    assert q["null"]["status"] == "inconclusive"  # intervals this wide cannot resolve 10 points
    assert q["rank2"]["status"] == "not_measured" and q["slack"]["status"] == "not_measured"
    narrow = {"trained_ci_lo": 0.42, "trained_ci_hi": 0.51, "null_ci_lo": 0.40, "null_ci_hi": 0.49}
    q = facts.open_questions(_model_facts(null={**_model_facts()["null"], **narrow}))
    assert q["null"]["status"] == "measured"  # a failed test at a resolving scale is an answer
    few = [{"domain_a": "a", "domain_b": "b", "shared": 2, "expected_shared": 0.02}]
    many = [{"domain_a": "a", "domain_b": "b", "shared": 40, "expected_shared": 12.0}]
    assert facts.open_questions(_model_facts(overlap=few))["overlap"]["status"] == "inconclusive"
    assert facts.open_questions(_model_facts(overlap=many))["overlap"]["status"] == "measured"
    rf = [{"domain": "math", "kind": "search", "flips": 8}, {"domain": "math", "kind": "random", "flips": 8}]
    assert facts.open_questions(_model_facts(random_flip=rf))["random_flip"]["status"] == "inconclusive"
    prop = {"fitness": "focused_proportional", "controls": 5, "crossings": 2, "controls_broken": 0}
    assert facts.open_questions(_model_facts(fitness_modes=[prop]))["slack"]["status"] == "measured"
    assert facts.open_questions(_model_facts(fitness_modes=[{**prop, "crossings": 0}]))["slack"]["status"] == \
        "inconclusive"


def test_template_never_calls_a_laptop_measurement_answered():
    assert "Answered" not in TEMPLATE.read_text(encoding="utf-8")


def test_cross_quantization_needs_separated_intervals():
    def model(name, k, n):
        return {"name": name, "pass1_total": {"accepted": k, "iterations": n, "rate": k / n}}

    assert facts.cross_quantization([model("a", 5, 10)])["status"] == "not_measured"
    assert facts.cross_quantization([model("a", 6, 10), model("b", 4, 10)])["status"] == "inconclusive"
    cq = facts.cross_quantization([model("b", 200, 1000), model("a", 500, 1000)])
    assert cq["status"] == "measured" and [r["name"] for r in cq["rows"]] == ["a", "b"]


def test_resource_file_cited_with_its_hash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "resources").mkdir()
    (tmp_path / "resources/p.yaml").write_text("a: 1\n")
    md = Renderer("md", "results/paper", {}, {}).provenance(["resources/p.yaml"])
    assert "repository file, sha256" in md and "(../../resources/p.yaml)" in md


def test_trajectory_panel_without_accepted_moves():
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from neagari.report.plotting import trajectory_panel

    fig, (a, b, c) = plt.subplots(1, 3)
    base = np.array([-0.5, -1.2, 0.3])
    assert trajectory_panel(a, base, ["x", "y", "z"], np.array([], dtype=int), np.empty((0, 3)), 60, 3) == 2
    assert a.get_xlim() == (0, 60) and "no accepted move" in [t.get_text() for t in a.texts]
    assert [line.get_ydata()[0] for line in a.get_lines()[:2]] == [-0.5, -1.2]  # flat at the base gaps
    assert len(a.get_xticks()) <= 6
    assert trajectory_panel(b, np.array([0.2]), ["x"], np.array([2]), np.array([[0.3]]), 5, 3) == 0
    assert "no wrong target" in [t.get_text() for t in b.texts] and b.get_ylim() == (-1, 1)
    trajectory_panel(c, base, ["x", "y", "z"], np.array([3, 9]), np.array([[-0.4, -1, 0.3], [-0.1, -0.9, 0.3]]), 12, 3)
    assert c.get_xlim() == (0, 12) and not c.texts  # the steps run to the end of the run
    plt.close(fig)


def _finding_facts(**over):
    """Facts of one searched model carrying the paper's own numbers (§7.1.1, §7.6, §6.8, §6.8.1)."""
    m = {"name": "m",
         "null": {"passed": True, "trained_accepted": 234, "trained_iterations": 500, "null_accepted": 84,
                  "null_iterations": 500, "trained_rate": 0.468, "null_rate": 0.168, "threshold_pp": 10.0,
                  "trained_seeds": 1},
         "crossing_all": {"flips": 2252, "flips_changing_any_target_sign": 1, "median_distance_ratio": 33000.0,
                          "mean_distance_ratio": None},
         "fitness_modes": [{"fitness": "borderline", "crossings": 2, "targets_wrong_at_start": 2, "first_crossing": 1685},
                           {"fitness": "focused", "crossings": 2, "targets_wrong_at_start": 2, "first_crossing": 1522}],
         "heldout": {"focused": {"file": "h.parquet", "all": {"converted": 6, "base_copy": 78, "rate": 6 / 78,
                                                               "ci_lo": 0.0358, "ci_hi": 0.1578}}}}
    m.update(over)
    return m


def _verdicts(m):
    from neagari.report.findings import findings

    t = findings([m], published.Published(PUBLISHED), [])
    return dict(zip(t.df["section"], t.df["verdict"]))


def test_the_papers_own_numbers_reproduce_every_finding():
    assert _verdicts(_finding_facts()) == {"§7.1.1": "reproduced", "§7.6": "reproduced", "§6.8": "reproduced",
                                           "§6.8.1": "reproduced"}


def test_findings_not_reproduced_or_inconclusive_by_their_rules():
    base = _finding_facts()
    # the measured inversion: 29.7% trained vs 38.7% randomized over 3 x 100 iterations per side;
    # Newcombe's interval for -9 pp is [-16.4, -1.4] pp, wholly below +10 pp
    inverted = {**base["null"], "passed": False, "trained_accepted": 89, "trained_iterations": 300,
                "null_accepted": 116, "null_iterations": 300, "trained_rate": 89 / 300, "null_rate": 116 / 300,
                "trained_seeds": 3}
    # 12 of 40 vs 8 of 40 (+10 pp, not disjoint): the interval holds both a 10-pp gap and none
    wide = {**inverted, "trained_accepted": 12, "trained_iterations": 40, "null_accepted": 8,
            "null_iterations": 40, "trained_rate": 0.3, "null_rate": 0.2, "trained_seeds": 1}
    assert _verdicts({**base, "null": inverted})["§7.1.1"] == "not reproduced"
    assert _verdicts({**base, "null": wide})["§7.1.1"] == "inconclusive"
    # 0 of 30 flips: Wilson upper bound 11.4%, above 5%; 30 of 300: lower bound 7.1%, above 5%
    few = {**base["crossing_all"], "flips": 30, "flips_changing_any_target_sign": 0}
    often = {**base["crossing_all"], "flips": 300, "flips_changing_any_target_sign": 30}
    assert _verdicts({**base, "crossing_all": few})["§7.6"] == "inconclusive"
    assert _verdicts({**base, "crossing_all": often})["§7.6"] == "not reproduced"
    assert _verdicts({**base, "crossing_all": None})["§7.6"] == "not measured"
    half = [{**r, "crossings": 1} for r in base["fitness_modes"]]
    none = [{**r, "crossings": 0} for r in base["fitness_modes"]]
    assert _verdicts({**base, "fitness_modes": half})["§6.8"] == "partly reproduced"
    assert _verdicts({**base, "fitness_modes": none})["§6.8"] == "not reproduced"
    assert _verdicts({**base, "fitness_modes": []})["§6.8"] == "not measured"
    lo, hi = stats.wilson_interval(9, 20)  # 45% [25.8%, 65.8%]: generalizes by its lower bound
    assert _verdicts({**base, "heldout": {"focused": {"file": "h", "all": {
        "converted": 9, "base_copy": 20, "rate": 0.45, "ci_lo": lo, "ci_hi": hi}}}})["§6.8.1"] == "not reproduced"
    assert _verdicts({**base, "heldout": {"focused": {"file": "h", "all": {
        "converted": 0, "base_copy": 0, "rate": None, "ci_lo": None, "ci_hi": None}}}})["§6.8.1"] == "not measured"
