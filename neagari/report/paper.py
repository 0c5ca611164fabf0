"""The regenerated paper: prose from a Jinja2 Markdown template whose numbers, tables and figures
all come from result files, rendered twice: ``paper.md`` (figures linked) and one self-contained
``index.html`` (CSS inline, figures embedded as base64 PNG).

The template calls ``table(name, caption)``, ``figure(name, caption)``, ``cite(path)`` and ``link(path)``; each
renders in the current mode and carries the provenance of its source files (the
``<file>.prov.json`` records :mod:`neagari.workflow.provenance` writes): in HTML a collapsible block with
the rule, inputs and their sha256, config subset and git commit, plus a relative link to the record.
The HTML is made from the Markdown by :func:`markdown_to_html` (CommonMark through markdown-it-py,
with pipe tables, raw HTML blocks and "{#id}" heading anchors).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import polars as pl

from neagari.hashing import sha256_file
from neagari.workflow.provenance import RECORD_SUFFIX

MISSING = "–"

# ---------------------------------------------------------------------------- numbers


def _finite(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def pct(x, digits: int = 1) -> str:
    """Fraction → percent: 0.469 → "46.9%"."""
    return f"{100 * x:.{digits}f}%" if _finite(x) else MISSING


def pp(x, digits: int = 1) -> str:
    """Percentage points, signed: 0.8 → "+0.8 pp"."""
    return f"{x:+.{digits}f} pp" if _finite(x) else MISSING


def num(x, digits: int = 3) -> str:
    """Integers with thousands separators, other numbers to ``digits`` significant digits."""
    if not _finite(x):
        return MISSING
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) >= 1000):
        return f"{int(x):,}"
    # beyond `digits` integer digits, %g would switch to exponent notation (3.33e+04): whole numbers
    return f"{x:,.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def signed(x, digits: int = 3) -> str:
    return f"{x:+.{digits}g}" if _finite(x) else MISSING


def fixed(x, digits: int = 2) -> str:
    return f"{x:,.{digits}f}" if _finite(x) else MISSING


def duration(seconds) -> str:
    """Seconds → "42 s", "3.5 min" or "9.7 h"."""
    if not _finite(seconds):
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def share(x) -> str:
    """A fraction of something as a percentage that stays readable when small: 0.15 → "15.0%",
    0.00033 → "0.033%"."""
    if not _finite(x):
        return MISSING
    return pct(x) if x >= 0.01 else f"{100 * x:.2g}%"


def plural(n, word: str, many: str | None = None) -> str:
    """1 → "1 flip", 3 → "3 flips"."""
    return f"{num(n)} {word if n == 1 else many or word + 's'}"


FILTERS = {"plural": plural, "share": share, "pct": pct, "pp": pp, "num": num, "signed": signed, "fixed": fixed, "duration": duration}

# Column name → how its cells read. Fractions become percent; *_pct and pct_* already are.
_KINDS = (
    (re.compile(r"^threshold_pp$"), "float"),  # a threshold is no difference: unsigned
    (re.compile(r"(^|_)pp$"), "pp"),
    (re.compile(r"(_pct$|^pct_)"), "percent_value"),
    (re.compile(r"^(rate|rolling_final|jaccard|threshold|eval_accuracy)$|^rate_at_\d+$|(_|^)rate$|"
                r"_rate_sd$|share$|(^|_)ci_(lo|hi)$"), "fraction"),
)


def column_kind(name: str, dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        for pattern, kind in _KINDS:
            if pattern.search(name):
                return kind
        return "float"
    if isinstance(dtype, pl.List):
        return "list"
    return "text"


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def format_cell(value: Any, kind: str, max_chars: int = 120) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    if kind == "fraction":
        return pct(value)
    if kind == "percent_value":
        return f"{value:.2f}%"
    if kind == "pp":
        return pp(value, 2)
    if kind == "bool":
        return "yes" if value else "no"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "float":
        return num(float(value), 4)
    if kind == "list":
        value = ", ".join(num(v) if isinstance(v, float) else str(v) for v in value)
    # one line (cells hold no newlines); control characters of raw model output shown as U+FFFD;
    # "prose" (the page's own sentences) is never cut, raw text is cut at max_chars
    text = " ".join(_CONTROL.sub("\ufffd", str(value)).split())
    return text if kind == "prose" or len(text) <= max_chars else text[: max_chars - 1] + "…"


# ---------------------------------------------------------------------------- items


@dataclass
class TableItem:
    """A table for the paper: its frame and the result files it was read from."""

    df: pl.DataFrame
    sources: list[str] = field(default_factory=list)
    formats: dict[str, str] = field(default_factory=dict)  # column → kind, overriding column_kind

    def rows(self) -> list[dict]:
        return self.df.to_dicts()


def concat_tables(items: Mapping[str, TableItem], label: str = "model") -> TableItem:
    """One table from per-model tables; a ``label`` column names the model unless one is there."""
    frames, sources, formats = [], [], {}
    for name, item in items.items():
        df = item.df if label in item.df.columns else item.df.select(pl.lit(name).alias(label), pl.all())
        frames.append(df)
        sources += item.sources
        formats.update(item.formats)
    df = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    return TableItem(df, sources, formats)


def table_cells(item: TableItem, max_chars: int = 120) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, formatted rows, numeric flag per column)."""
    df = item.df
    kinds = [item.formats.get(c) or column_kind(c, df.schema[c]) for c in df.columns]
    rows = [[format_cell(v, k, max_chars) for v, k in zip(row, kinds)] for row in df.iter_rows()]
    numeric = [k not in ("text", "prose", "list", "bool") for k in kinds]
    return [c.replace("_", " ") for c in df.columns], rows, numeric


def table_markdown(item: TableItem) -> str:
    headers, rows, numeric = table_cells(item)

    def line(cells):
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    rule = "|" + "|".join("---:" if n else "---" for n in numeric) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def table_html(item: TableItem) -> str:
    headers, rows, numeric = table_cells(item)
    # numbers right-aligned; short text kept on one line, long text (model outputs) wraps
    short = [max((len(r[i]) for r in rows), default=0) <= 32 for i in range(len(headers))]
    cls = [' class="num"' if n else ' class="nw"' if s else "" for n, s in zip(numeric, short)]
    head = "".join(f"<th{c}>{html.escape(h)}</th>" for h, c in zip(headers, cls))
    body = "".join("<tr>" + "".join(f"<td{c}>{html.escape(v)}</td>" for v, c in zip(r, cls)) + "</tr>"
                   for r in rows)
    return f'<table class="data"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------------------- provenance


def load_record(path: str | os.PathLike) -> dict | None:
    """The provenance record beside ``path``, or None when there is none (or it is unreadable)."""
    rec = Path(str(path) + RECORD_SUFFIX)
    try:
        return json.loads(rec.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _short(sha: str | None, n: int = 12) -> str:
    return sha[:n] if sha else MISSING


def _commit(record: Mapping) -> str:
    git = record.get("git") or {}
    commit = git.get("commit")
    if not commit:
        return "no git commit"
    return f"commit {commit[:10]}" + (" (dirty tree)" if git.get("dirty") else "")


def provenance_html(path: str, record: Mapping | None, href: str) -> str:
    """A collapsible block describing one file's record; ``href``: relative link to the record."""
    p = html.escape(path)
    if record is None:
        return f'<details class="prov"><summary>provenance of <code>{p}</code>: no record</summary></details>'
    out = record.get("output", {})
    script = record.get("script") or {}
    inputs = "".join(
        f"<tr><td><code>{html.escape(i.get('path', ''))}</code></td><td><code>{_short(i.get('sha256'))}</code>"
        f"</td></tr>" for i in record.get("inputs", []))
    rows = [
        ("rule", f"<code>{html.escape(str(record.get('rule')))}</code>"),
        ("wildcards", f"<code>{html.escape(json.dumps(record.get('wildcards') or {}))}</code>"),
        ("output sha256", f"<code>{html.escape(str(out.get('sha256')))}</code>"),
        ("script", f"<code>{html.escape(str(script.get('path')))}</code> "
                   f"sha256 <code>{_short(script.get('sha256'))}</code>"),
        ("git", html.escape(_commit(record))),
        ("finished", html.escape(str(record.get("finished_at")))),
        ("config", f"<pre>{html.escape(json.dumps(record.get('config'), indent=1, sort_keys=True))}</pre>"),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    n_in = len(record.get("inputs", []))
    return (f'<details class="prov"><summary>provenance of <code>{p}</code>: rule '
            f'<code>{html.escape(str(record.get("rule")))}</code>, {html.escape(_commit(record))}</summary>'
            f'<dl>{dl}<dt>inputs ({n_in})</dt><dd><table class="inputs">{inputs}</table></dd></dl>'
            f'<a href="{html.escape(href)}">{html.escape(Path(href).name)}</a></details>')


def provenance_markdown(path: str, record: Mapping | None, href: str) -> str:
    if record is None:
        return f"*Source:* `{path}` (no provenance record)"
    sha = _short((record.get("output") or {}).get("sha256"))
    return (f"*Source:* `{path}` (rule `{record.get('rule')}`, {_commit(record)}, sha256 `{sha}`, "
            f"[record]({href}))")


def resource_markdown(path: str, sha: str, href: str) -> str:
    """A repository file the paper reads (no rule made it, so no record): its sha256 and a link."""
    return f"*Source:* `{path}` (repository file, sha256 `{_short(sha)}`, [file]({href}))"


def resource_html(path: str, sha: str, href: str) -> str:
    p = html.escape(path)
    return (f'<details class="prov"><summary>source <code>{p}</code>: repository file, sha256 '
            f'<code>{_short(sha)}</code></summary><a href="{html.escape(href)}">{p}</a></details>')


# ---------------------------------------------------------------------------- Markdown → HTML
# CommonMark (markdown-it-py) with pipe tables and raw HTML (the HTML renderer's tables and figures
# are HTML blocks); a heading may end in "{#id}", its anchor, else its anchor is its slug.

_ANCHOR = re.compile(r"\s*\{#([\w-]+)\}\s*$")


@functools.lru_cache(maxsize=1)
def _markdown():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table")


def inline(text: str) -> str:
    """The HTML of one line of inline Markdown (code, emphasis, links; the rest escaped)."""
    return _markdown().renderInline(text)


def slug(text: str) -> str:
    return re.sub(r"[^\w]+", "-", text.lower()).strip("-") or "section"


def markdown_to_html(text: str) -> tuple[str, list[tuple[int, str, str]]]:
    """(HTML body, table of contents as (level, id, title)) of the paper's Markdown."""
    md = _markdown()
    tokens = md.parse(text)
    toc, used = [], set()
    for heading, content in zip(tokens, tokens[1:]):
        if heading.type != "heading_open":
            continue
        title, anchor = content.content, None
        if m := _ANCHOR.search(title):
            title, anchor = title[: m.start()], m.group(1)
            last = content.children[-1] if content.children else None
            if last is not None and last.type == "text":
                last.content = _ANCHOR.sub("", last.content)
        anchor = anchor or slug(title)
        while anchor in used:
            anchor += "-x"
        used.add(anchor)
        heading.attrSet("id", anchor)
        toc.append((int(heading.tag[1]), anchor, title))
    return md.renderer.render(tokens, md.options, {}), toc


# ---------------------------------------------------------------------------- rendering


def png_width(path: str | os.PathLike) -> int:
    """Pixel width from a PNG's IHDR chunk. Figures are saved at twice the style's screen dpi, so
    half of it shows them at the size matplotlib laid them out for: panels that fit share a row,
    wider ones get a row of their own."""
    head = Path(path).read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    return int.from_bytes(head[16:20], "big")


def _base64(path: str | os.PathLike) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _is_resource(path: str) -> bool:
    """A file of the repository (resources/...), not a result: it has no provenance record."""
    return not Path(path).as_posix().startswith("results/") and Path(path).is_file() and \
        not Path(str(path) + RECORD_SUFFIX).exists()


class Renderer:
    """The template's ``table``/``figure``/``cite`` in one mode ("md" or "html"), numbering tables
    and figures as it goes. Paths are relative to the working directory; links are made relative
    to ``out_dir`` (where paper.md and index.html are written)."""

    def __init__(self, mode: str, out_dir: str | os.PathLike, tables: Mapping[str, TableItem],
                 figures: Mapping[str, Mapping[str, str]]):
        if mode not in ("md", "html"):
            raise ValueError(f"mode must be 'md' or 'html', got {mode!r}")
        self.mode, self.out_dir = mode, Path(out_dir)
        self.tables, self.figures = tables, figures
        self.n_tables = self.n_figures = 0

    def href(self, path: str) -> str:
        return Path(os.path.relpath(path, self.out_dir)).as_posix()

    def provenance(self, paths: Sequence[str]) -> str:
        paths = list(dict.fromkeys(paths))
        render = provenance_html if self.mode == "html" else provenance_markdown
        resource = resource_html if self.mode == "html" else resource_markdown
        blocks = [resource(p, sha256_file(p), self.href(p)) if _is_resource(p)
                  else render(p, load_record(p), self.href(p + RECORD_SUFFIX)) for p in paths]
        if self.mode == "md":
            return "\n".join(f"- {b}" for b in blocks)
        if len(blocks) > 3:  # many sources (one per search run): fold them once more
            return (f'<div class="provs"><details class="prov-group"><summary>provenance of {len(blocks)} source '
                    f'files</summary>{"".join(blocks)}</details></div>')
        return f'<div class="provs">{"".join(blocks)}</div>'

    def table(self, name: str, caption: str) -> str:
        item = self.tables.get(name)
        if item is None or item.df.is_empty():
            return f"\n\n*(No rows in this run: {caption})*\n\n"
        self.n_tables += 1
        label = f"Table {self.n_tables}."
        if self.mode == "md":
            return f"\n\n**{label}** {caption}\n\n{table_markdown(item)}\n\n{self.provenance(item.sources)}\n\n"
        return (f'\n\n<figure class="table" id="table-{self.n_tables}"><figcaption><strong>{label}</strong> '
                f'{inline(caption)}</figcaption><div class="scroll">{table_html(item)}</div>'
                f"{self.provenance(item.sources)}</figure>\n\n")

    def figure(self, name: str, caption: str) -> str:
        panels = self.figures.get(name) or {}
        if not panels:
            return f"\n\n*(Not made in this run: {caption})*\n\n"
        self.n_figures += 1
        label = f"Figure {self.n_figures}."
        pdfs = {m: str(Path(p).with_suffix(".pdf")) for m, p in panels.items()}
        if self.mode == "md":
            images = "\n\n".join(f"![{name}: {m}]({self.href(p)})" for m, p in panels.items())
            return f"\n\n{images}\n\n**{label}** {caption}\n\n{self.provenance(list(panels.values()))}\n\n"
        imgs = "".join(
            f'<div class="panel" style="flex: 0 1 {png_width(p) // 2}px"><img alt="{html.escape(name)}: '
            f'{html.escape(m)}" src="data:image/png;base64,{_base64(p)}">'
            f'<div class="panel-label">{html.escape(m)} (<a href="{html.escape(self.href(pdfs[m]))}">PDF</a>)</div>'
            f"</div>" for m, p in panels.items())
        return (f'\n\n<figure class="fig" id="figure-{self.n_figures}"><div class="panels">{imgs}</div>'
                f"<figcaption><strong>{label}</strong> {inline(caption)}</figcaption>"
                f"{self.provenance(list(panels.values()))}</figure>\n\n")

    def link(self, path: str) -> str:
        """Relative link from the paper to a result file."""
        return self.href(path)

    def cite(self, path: str) -> str:
        """A Markdown link to the record of ``path``, for the numbers a sentence quotes from it."""
        return f"[source]({self.href(path + RECORD_SUFFIX)})"


def render_template(template_path: str | os.PathLike, context: Mapping[str, Any], renderer: Renderer) -> str:
    """The Markdown of the paper in ``renderer``'s mode. Undefined names fail loudly."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(template_path).parent)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False,
                             comment_start_string="{##", comment_end_string="##}")  # "{#id}" names headings
    env.filters.update(FILTERS)
    template = env.get_template(Path(template_path).name)
    text = template.render(**context, table=renderer.table, figure=renderer.figure, cite=renderer.cite,
                           link=renderer.link)
    # a heading is a block of its own whatever the template's loops left around it
    text = re.sub(r"(?m)(?<=.)\n(#{1,6} )", r"\n\n\1", text)
    return re.sub(r"\n{3,}", "\n\n", text)


def build_summary(paths: Sequence[str]) -> dict:
    """How many files the paper read, and the git commits recorded by the rules that made them."""
    records = [load_record(p) for p in dict.fromkeys(paths)]
    commits = sorted({_commit(r) for r in records if r is not None})
    return {"files": len(records), "without_record": sum(r is None for r in records), "commits": commits}


def render_page(markdown: str, shell_path: str | os.PathLike, css_path: str | os.PathLike, title: str,
                footer: str = "") -> str:
    """The self-contained HTML page: the Markdown's body, a table of contents, the CSS inline."""
    import jinja2
    from markupsafe import Markup

    body, toc = markdown_to_html(markdown)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    shell = env.from_string(Path(shell_path).read_text(encoding="utf-8"))
    return shell.render(title=title, css=Markup(Path(css_path).read_text(encoding="utf-8")), body=Markup(body),
                        footer=footer,
                        toc=[(lvl, anchor, Markup(inline(t))) for lvl, anchor, t in toc if lvl in (2, 3)])
