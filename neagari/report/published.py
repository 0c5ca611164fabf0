"""The paper's published figures (resources/paper/published.yaml), looked up by key, and the
comparisons that set them beside this run's numbers: what each run is against the paper's models
and iteration counts, and "this run" / "paper" tables.

Values in the file are as the paper prints them (percentages in percent); :meth:`Published.value`
gives them in the page's units (fractions for rates), :meth:`Published.text` as the paper wrote them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import polars as pl
import yaml

from neagari.report.paper import MISSING, TableItem, num, pct, pp
from neagari.stats import wilson_interval

SIGNED_UNITS = {"pp", "fitness"}  # differences, printed with their sign as the paper does


def _decimal(value: float, digits: int | None) -> str:
    if digits is not None:
        return f"{value:,.{digits}f}"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 1000:
        return f"{int(value):,}"
    text = f"{value:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


class Published:
    """The entries of published.yaml by key; ``path`` is the file (cited on the page)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        self.meta: dict = data.get("paper", {})
        self.models: dict = data.get("models", {})
        self.entries: dict[str, dict] = {}
        for e in data["entries"]:
            if e["key"] in self.entries:
                raise ValueError(f"{path}: key {e['key']!r} twice")
            self.entries[e["key"]] = e

    def __contains__(self, key: str) -> bool:
        return key in self.entries

    def entry(self, key: str) -> dict:
        try:
            return self.entries[key]
        except KeyError:
            raise KeyError(f"{self.path} has no entry {key!r}") from None

    def value(self, key: str) -> float:
        """The number in the page's units: percentages as fractions, everything else as printed."""
        e = self.entry(key)
        return e["value"] / 100 if e["unit"] == "%" else e["value"]

    def get(self, key: str, default=None):
        """:meth:`value`, or ``default`` where the paper has no such figure (a domain it did not run)."""
        return self.value(key) if key in self.entries else default

    def text(self, key: str) -> str:
        """The number as the paper prints it, with its unit where that is a symbol: "46.9%",
        "+0.0792", "+30.0 pp", "1,238"."""
        e = self.entry(key)
        v, unit = e["value"], e["unit"]
        body = _decimal(v, e.get("digits"))
        if unit in SIGNED_UNITS and v > 0:
            body = "+" + body
        return body + "%" if unit == "%" else body + " pp" if unit == "pp" else body

    def section(self, key: str) -> str:
        return self.entry(key)["section"]

    def model_of(self, key: str) -> str | None:
        return self.entry(key).get("model")

    def paper_model(self, spec: Mapping) -> str | None:
        """The paper's model a downloaded model is (its name in the file's ``models``), else None."""
        if spec.get("source") != "download":
            return None
        hub = (spec.get("download") or {}).get("hub") or {}
        where = " ".join(str(x) for x in (hub.get("repo"), hub.get("filename"), (spec.get("download") or {}).get("url"),
                                          (spec.get("download") or {}).get("path")) if x)
        for key, m in self.models.items():
            if re.search(m["match"], where, re.IGNORECASE):
                return key
        return None


# ---------------------------------------------------------------------------- what this run is


def weight_count(arch: Mapping, vocab: int) -> int:
    """Linear and embedding weights of a Qwen3 model of this shape (norm weights left out)."""
    h, layers, ffn = arch["hidden"], arch["n_layer"], arch["ffn"]
    q, kv = arch["n_head"] * arch["head_dim"], arch["n_kv_head"] * arch["head_dim"]
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * ffn
    return vocab * h * (1 if arch.get("tied_embeddings") else 2) + layers * per_layer


def _embedded_block(spec: Mapping, config: Mapping) -> dict:
    """The ``embedded`` config a trained model was made with: a shipped model's record, else the run's."""
    record = (spec.get("shipped") or {}).get("record")
    if record:
        path = Path(record) / "record.json"
        try:
            import json

            block = json.loads(path.read_text(encoding="utf-8")).get("embedded")
            if block:
                return block
        except (OSError, ValueError):
            pass
    return dict(config.get("embedded") or {})


def describe_models(config: Mapping, searched: list[str], published: Published | None) -> list[dict]:
    """One description per configured model: its origin (paper / embedded / shipped / fixture /
    download), variant, shape and weight count where known, and whether it was searched."""
    out = []
    for name, spec in (config.get("models") or {}).items():
        d: dict[str, Any] = {"name": name, "source": spec.get("source"), "variant": spec.get("variant"),
                             "searched": name in searched, "paper_model": None, "arch": None, "weights": None,
                             "vocab": None, "where": None}
        if spec.get("source") in ("embedded", "shipped"):
            block = _embedded_block(spec, config)
            arch = block.get("architecture")
            vocab = (block.get("tokenizer") or {}).get("vocab_size")
            if arch:
                d["arch"], d["vocab"] = dict(arch), vocab
                if vocab and all(k in arch for k in ("hidden", "n_layer", "ffn", "n_head", "n_kv_head", "head_dim")):
                    d["weights"] = weight_count(arch, vocab)
            if spec.get("source") == "shipped":
                d["where"] = str(Path((spec.get("shipped") or {}).get("path", "resources/models/")).parent) + "/"
        elif spec.get("source") == "fixture":
            d["arch"] = dict(spec.get("fixture") or {}) or None
        elif spec.get("source") == "download":
            dl = spec.get("download") or {}
            hub = dl.get("hub") or {}
            d["where"] = "/".join(x for x in (hub.get("repo"), hub.get("filename")) if x) or dl.get("url") or \
                dl.get("path")
            key = published.paper_model(spec) if published else None
            if key:
                d["paper_model"] = published.models[key]["name"]
                d["paper_architecture"] = published.models[key].get("architecture")
        # a second member of the same family (same shape, another training) is described by reference
        d["same_as"] = next((o["name"] for o in out if d["arch"] and o["arch"] == d["arch"] and o["vocab"] == d["vocab"]
                             and o["source"] == d["source"]), None)
        out.append(d)
    return out


# The paper's iteration count of each kind of run (stage -> key in published.yaml, per domain or not).
PAPER_ITERATIONS = {"pass1": "pass1.{domain}.iterations", "isolated": "pass1.{domain}.iterations",
                    "targeted": "targeted.iterations", "nullbase": "null.iterations"}


def scale(runs: pl.DataFrame, published: Published) -> dict:
    """This run's iteration budgets against the paper's, per kind of experiment: for pass 1 per
    domain, for the targeted runs and the null baseline per search. ``runs``: the run table
    (stage, run, domain, budget, iterations) of every searched model."""
    out = {}
    for stage in ("pass1", "targeted", "nullbase"):
        rows = runs.filter(pl.col("stage") == stage).unique(["run"], keep="first", maintain_order=True).to_dicts()
        items = []
        for r in rows:
            key = PAPER_ITERATIONS[stage].format(domain=r["domain"])
            if key not in published or r["budget"] is None:
                continue
            paper_it = published.value(key)
            items.append({"run": r["run"], "domain": r["domain"], "budget": r["budget"], "paper": paper_it,
                          "ratio": r["budget"] / paper_it, "paper_model": published.model_of(key)})
        if stage == "nullbase":  # one budget per seed and side: the same number many times
            items = list({(i["budget"], i["paper"]): i for i in items}.values())
        if items:
            ratios = [i["ratio"] for i in items]
            out[stage] = {"items": items, "min": min(ratios), "max": max(ratios),
                          "paper_model": items[0]["paper_model"]}
    stopped = runs.filter(pl.col("budget").is_not_null() & (pl.col("iterations") < pl.col("budget")))
    out["stopped_early"] = stopped.height
    out["all_paper_scale"] = bool(out.keys() - {"stopped_early", "all_paper_scale"}) and all(
        abs(v["min"] - 1) < 1e-9 and abs(v["max"] - 1) < 1e-9 for k, v in out.items() if isinstance(v, dict))
    return out


# ---------------------------------------------------------------------------- this run against the paper


def _rate_ci(k, n) -> str:
    if not n:
        return MISSING
    lo, hi = wilson_interval(int(k), int(n))
    return f"{num(int(k))} of {num(int(n))} ({pct(k / n)}, [{pct(lo)}, {pct(hi)}])"


def _paper_rate_ci(p: Published, prefix: str, k: str, n: str | None, rate: str, lo: str, hi: str) -> str:
    head = f"{p.text(prefix + k)} of {p.text(n)}" if n else p.text(prefix + k)
    return f"{head} ({p.text(prefix + rate)}, [{p.text(prefix + lo)}, {p.text(prefix + hi)}])"


def long_table(rows: list[tuple[str, dict[str, str], str]], models: list[str], paper_label: str,
               sources: list[str]) -> TableItem:
    """quantity | this run (one column per model) | paper: every cell already text."""
    cols = {"quantity": [r[0] for r in rows]}
    for m in models:
        cols[f"this run: {m}" if len(models) > 1 else "this run"] = [r[1].get(m, MISSING) for r in rows]
    cols[paper_label] = [r[2] for r in rows]
    df = pl.DataFrame(cols)
    return TableItem(df, sources, {c: "text" for c in df.columns})


def pass1_comparison(models: list[dict], p: Published) -> TableItem | None:
    """Pass 1 per domain: budget, accepted flips and rate of this run beside the paper's §6.5 row."""
    rows = []
    for m in models:
        for r in m["pass1"] + [{"run": "total", **m["pass1_total"], "budget": None}]:
            key = f"pass1.{r['run']}."
            rows.append({"model": m["name"], "domain": r["run"], "iterations": r["iterations"],
                         "paper_iterations": p.get(key + "iterations"),
                         "lambda": r.get("lambda"), "paper_lambda": p.get(key + "lambda"),
                         "flips": r["accepted"], "paper_flips": p.get(key + "flips"),
                         "rate": r["rate"], "paper_rate": p.get(key + "rate")})
    if not rows:
        return None
    df = pl.DataFrame(rows, infer_schema_length=None)
    df = df.with_columns(pl.col("paper_iterations").cast(pl.Int64), pl.col("paper_flips").cast(pl.Int64))
    return TableItem(df, [p.path] + [s for m in models for s in m["pass1_sources"]],
                     {"lambda": "float", "paper_lambda": "float"})


def null_comparison(models: list[dict], p: Published, sources: list[str]) -> TableItem | None:
    if not models:
        return None
    names = [m["name"] for m in models]
    v = {m["name"]: m["null"] for m in models}
    def per_search(x):
        return f"{x['trained_seeds']} × {num(x['trained_iterations'] // max(1, x['trained_seeds']))}"

    rows = [
        ("searches per side × iterations", {n: per_search(x) for n, x in v.items()},
         f"1 × {p.text('null.iterations')}"),
        ("trained model: accepted",
         {n: _rate_ci(x["trained_accepted"], x["trained_iterations"]) for n, x in v.items()},
         _paper_rate_ci(p, "null.", "trained_accepted", "null.iterations", "trained_rate", "trained_ci_lo",
                        "trained_ci_hi")),
        ("MLP signs randomized: accepted",
         {n: _rate_ci(x["null_accepted"], x["null_iterations"]) for n, x in v.items()},
         _paper_rate_ci(p, "null.", "null_accepted", "null.iterations", "null_rate", "null_ci_lo", "null_ci_hi")),
        ("gap (threshold)", {n: f"{pp(x['gap_pp'])} ({num(x['threshold_pp'])} pp)" for n, x in v.items()},
         f"{p.text('null.gap_pp')} ({p.text('null.threshold_pp').lstrip('+')})"),
        ("verdict", {n: "passed" if x["passed"] else "failed" for n, x in v.items()}, "passed"),
    ]
    return long_table(rows, names, f"paper ({p.model_of('null.trained_rate')}, §7.1.1)", [p.path] + sources)


def targeted_comparison(models: list[dict], p: Published, sources: list[str]) -> TableItem | None:
    """Each targeted fitness of this run beside the paper's run of the same fitness (§6.8 table)."""
    fitnesses = list(dict.fromkeys(r["fitness"] for m in models for r in m["fitness_modes"]))
    if not fitnesses:
        return None
    names = [m["name"] for m in models]
    rows = []
    for f in fitnesses:
        per = {m["name"]: next((r for r in m["fitness_modes"] if r["fitness"] == f), None) for m in models}
        key = f"targeted.{f}."
        has = key + "rate" in p

        def cell(fn):
            return {n: fn(r) if r else MISSING for n, r in per.items()}

        paper_it = p.text("targeted.iterations")
        rows += [
            (f"{f}: accepted", cell(lambda r: f"{num(r['accepted'])} of {num(r['iterations'])} ({pct(r['rate'])})"),
             f"{p.text(key + 'accepted')} of {paper_it} ({p.text(key + 'rate')})" if has else "not run"),
            (f"{f}: targets crossed", cell(lambda r: f"{r['crossings']} of {r['targets_wrong_at_start']}"),
             f"{p.text(key + 'crossings')} of {p.text('targeted.targets_wrong')}" if has else MISSING),
            (f"{f}: first crossing", cell(lambda r: "none" if r["first_crossing"] is None
                                          else f"iteration {num(r['first_crossing'])}"),
             f"iteration {p.text(key + 'first_crossing')}" if has else MISSING),
            (f"{f}: controls broken", cell(lambda r: f"{r['controls_broken']} of {r['controls']}"),
             f"{p.text(key + 'controls_broken')} of {p.text('targeted.controls')}" if has else MISSING),
        ]
    return long_table(rows, names, f"paper ({p.model_of('targeted.focused.rate')}, §6.8)", [p.path] + sources)


def heldout_comparison(models: list[dict], p: Published) -> TableItem | None:
    """COPY → PASS conversion on the held-out verbatim probes, per targeted fitness, beside §6.8.1
    (the paper evaluated its focused patch only: its column is the same beside every fitness)."""
    names, rows, sources = [m["name"] for m in models], [], [p.path]
    fitnesses = list(dict.fromkeys(f for m in models for f in m["heldout"]))
    for f in fitnesses:
        per = {m["name"]: (m["heldout"].get(f) or {}).get("all") for m in models}
        sources += [m["heldout"][f]["file"] for m in models if f in m["heldout"]]

        def cell(fn):
            return {n: fn(a) if a else MISSING for n, a in per.items()}

        rows += [
            (f"{f}: held-out probes", cell(lambda a: num(a["probes"])), p.text("heldout.probes")),
            (f"{f}: base model copies", cell(lambda a: num(a["base_copy"])),
             p.text("heldout.all.base_copy")),
            (f"{f}: COPY → PASS", cell(lambda a: f"{num(a['converted'])} of {num(a['base_copy'])} ({pct(a['rate'])}, "
                                             f"[{pct(a['ci_lo'])}, {pct(a['ci_hi'])}])" if a["base_copy"]
                                  else "undefined (no base copy)"),
             f"{p.text('heldout.all.converted')} of {p.text('heldout.all.base_copy')} ({p.text('heldout.all.rate')}, "
             f"[{p.text('heldout.all.ci_lo')}, {p.text('heldout.all.ci_hi')}])"),
            (f"{f}: verdict (threshold)", cell(lambda a: ("generalizes" if a["generalizes"] else "does not generalize")
                                              + f" ({pct(a['threshold'], 0)})" if a["base_copy"] else "no verdict"),
             f"does not generalize ({p.text('heldout.all.threshold')})"),
        ]
    if not rows:
        return None
    return long_table(rows, names, f"paper ({p.model_of('heldout.all.rate')}, focused, §6.8.1)", sources)


def crossing_comparison(models: list[dict], p: Published, sources: list[str]) -> TableItem | None:
    per = {m["name"]: m["crossing_all"] for m in models if m["crossing_all"]}
    if not per:
        return None

    def cell(fn):
        return {n: fn(c) for n, c in per.items()}

    rows = [
        ("accepted pipeline flips", cell(lambda c: num(c["flips"])), p.text("crossing.flips")),
        ("flips that changed a target's sign", cell(lambda c: num(c["flips_changing_any_target_sign"])),
         p.text("crossing.flips_changing_any_target_sign")),
        ("mean per-flip target effect (logits)", cell(lambda c: num(c["mean_delta"])),
         f"about {p.text('crossing.mean_delta')}"),
        ("median distance of a wrong probe (logits; paper's text)",
         cell(lambda c: f"{num(c['median_wrong_distance'])} ({num(c['n_wrong_probes'])} wrong)"),
         f"{p.text('crossing.median_wrong_distance')} ({p.text('crossing.n_wrong')} wrong)"),
        ("median distance / effect (paper's text)", cell(lambda c: f"{num(c['median_distance_ratio'])} : 1"),
         f"about {p.text('crossing.distance_ratio')} : 1"),
        # upstream's notebook reports the mean instead; the paper prints no figure for it
        ("mean distance of a wrong probe (logits; upstream notebook)",
         cell(lambda c: num(c["mean_wrong_distance"])), MISSING),
        ("mean distance / effect (upstream notebook)", cell(lambda c: f"{num(c['mean_distance_ratio'])} : 1"),
         MISSING),
    ]
    return long_table(rows, list(per), f"paper ({p.model_of('crossing.flips')}, §7.6)", [p.path] + sources)


BENCH_KEYS = {"ifeval": "ifeval", "gsm8k": "gsm8k", "mmlu_redux": "mmlu_redux", "mmlu-redux": "mmlu_redux",
              "musr": "musr"}


def bench_comparison(models: list[dict], p: Published, sources: list[str]) -> TableItem | None:
    rows = []
    for m in models:
        for r in m["bench"] or []:
            if "base_accuracy_pct" not in r:
                continue
            key = BENCH_KEYS.get(str(r["domain"]).lower())
            k = f"bench.{key}." if key else None
            rows.append({"model": m["name"], "domain": r["domain"], "n": r.get("n"),
                         "base_pct": r["base_accuracy_pct"], "patched_pct": r["patched_accuracy_pct"],
                         "diff_pp": r.get("diff_pp"), "ci_lo_pp": r.get("ci_lo_pp"), "ci_hi_pp": r.get("ci_hi_pp"),
                         "paper_n": p.get(k + "n") if k else None,
                         "paper_base_pct": p.get(k + "base") if k else None,
                         "paper_patched_pct": p.get(k + "patched") if k else None,
                         "paper_diff_pp": p.get(k + "delta_pp") if k else None})
    if not rows:
        return None
    df = pl.DataFrame(rows, infer_schema_length=None)
    # the paper's accuracies are stored as percentages: shown as they are, not as fractions
    df = df.with_columns([(pl.col(c) * 100).alias(c) for c in ("paper_base_pct", "paper_patched_pct")])
    return TableItem(df, [p.path] + sources, {"paper_n": "int"})
