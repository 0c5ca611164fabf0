"""neagari.report.paper: number formats, tables from DataFrames, provenance blocks from record dicts, the
Markdown to HTML, and a template whose number comes from a file ending up in both outputs."""

from __future__ import annotations

import json
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
