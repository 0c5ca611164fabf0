"""What the paper says, read from the result files: tables (each remembering its source files)
and facts (the numbers the prose quotes), built from the manifest rule build_paper receives
(paper_manifest() in rules/common_report.smk), then rendered to Markdown and HTML
(neagari.report.paper)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from neagari.analysis.sensitivity import METRIC_WORDS, SPREAD_FACTOR, overall_spread
from neagari.report import paper
from neagari.report.paper import TableItem, concat_tables
from neagari.report import published as pub
from neagari.engine.gguf_io import GGUFFile
from neagari.report import bits, fidelity
from neagari.report.findings import findings
from neagari.stats import wilson_interval
from neagari.tables import read_table

GROUP_BITS = 128  # sign bits one weight XOR inverts (one Q1_0 block); a scale move changes one bit
def item(path, df=None) -> TableItem:
    return TableItem(read_table(path) if df is None else df, [path])


def run_table(summaries: dict, runs: dict) -> TableItem:
    """One row per search run, from its summary.json (``runs``: the run of each summary, by the
    same key)."""
    rows = []
    for label, path in summaries.items():
        s = json.loads(Path(path).read_text(encoding="utf-8"))
        stage, run = runs[label]["stage"], runs[label]["run"]
        cfg = s.get("config", {})
        rows.append({"stage": stage, "run": run, "domain": runs[label].get("domain"),
                     "fitness_function": cfg.get("fitness"), "lambda": cfg.get("lam"), "budget": cfg.get("iterations"),
                     "iterations": s["iterations_run"], "targets": s["n_targets"], "controls": s["n_controls"],
                     "accepted": s["accepted"], "fitness": s.get("fitness_final"), "rate": s["acceptance_rate"],
                     "stop_reason": s.get("stop_reason"), "elapsed_s": s.get("elapsed_s")})
    return TableItem(pl.DataFrame(rows, infer_schema_length=None), list(summaries.values()))


def totals(runs: pl.DataFrame) -> dict:
    it, acc = int(runs["iterations"].sum()), int(runs["accepted"].sum())
    return {"iterations": it, "accepted": acc, "rate": acc / it if it else None,
            "seconds": float(runs["elapsed_s"].sum()), "runs": runs.height}


def rows_where(df: pl.DataFrame, **eq) -> list[dict]:
    for k, v in eq.items():
        df = df.filter(pl.col(k) == v)
    return df.to_dicts()


def search_tables(a: dict, runs: TableItem, summaries: dict) -> dict:
    """The searched model's tables, each citing the files it was read from."""
    df = runs.df
    sel = ["run", "iterations", "lambda", "controls", "accepted", "fitness", "rate"]

    def stage(name):
        """One pipeline stage as the paper's §6.5 table (with its total row)."""
        rows = df.filter(pl.col("stage") == name)
        total = totals(rows)
        table = pl.concat([rows.select(sel), pl.DataFrame([{"run": "total", "iterations": total["iterations"],
                                                            "accepted": total["accepted"], "rate": total["rate"]}])],
                          how="diagonal_relaxed") if rows.height else rows.select(sel)
        return TableItem(table.rename({"accepted": "flips"}),
                         [p for k, p in summaries.items() if k.startswith(name + "/")])

    t = {"runs": runs, "pass1": stage("pass1"), "pass2": stage("pass2"),
         "acceptance_pass1": TableItem(a["acceptance"].df.filter(pl.col("run").str.starts_with("pass1/")),
                                       a["acceptance"].sources),
         **{k: a[k] for k in ("acceptance", "lambda_sweep", "crossing", "scale_share", "overlap", "null_table",
                              "fitness_modes", "random_flip", "rank2")}}
    q = a["quartiles"].df
    for s in ("pass1", "pass2"):
        t[f"quartiles_{s}"] = TableItem(q.filter(pl.col("stage") == s).select("domain", pl.exclude("stage", "domain")),
                                        a["quartiles"].sources)
    m = a["interference"].df
    t["interference"] = TableItem(m.pivot("probe_domain", index="patch_domain", values="mean_delta"),
                                  a["interference"].sources, {c: "float" for c in m["probe_domain"].unique()})
    t["null_verdict"] = TableItem(a["null_verdict"].df.select(
        "trained_model", "trained_seeds", "trained_rate", "trained_ci_lo", "trained_ci_hi", "null_model",
        "null_rate", "null_ci_lo", "null_ci_hi", "gap_pp", "threshold_pp", "passed"), a["null_verdict"].sources)
    return t


def search_facts(name: str, a: dict, runs: pl.DataFrame, order: list[str], run_records: dict,
                 summaries: dict | None = None) -> dict:
    """The numbers the prose quotes about one searched model (rows as dicts); ``order`` is the
    pipeline's domain order, ``run_records`` the manifest's run of each summary, ``summaries`` the
    summary file of each run (by the same key)."""
    flips = a["crossing_flips"].df
    n_scale = int((flips["move_type"] == "scale").sum())
    crossing = {r["patch"]: r for r in a["crossing"].rows()}
    matrix = a["interference"].rows()
    own = [r for r in matrix if r["patch_domain"].split("/")[-1] == r["probe_domain"]]
    other = [r for r in matrix if r not in own and r["mean_delta"] is not None]
    pass1, pass2 = runs.filter(pl.col("stage") == "pass1"), runs.filter(pl.col("stage") == "pass2")
    pipeline_rate = {r["run"]: r["rate"] for r in pass1.to_dicts()}
    facts = {
        "name": name, "pass1": pass1.to_dicts(), "pass1_total": totals(pass1),
        "pass2_total": totals(pass2) if pass2.height else None,
        "bits": (flips.height - n_scale) * GROUP_BITS + n_scale, "pipeline_flips": flips.height, "scale_flips": n_scale,
        "checkpoints": [int(c.rsplit("_", 1)[1]) for c in a["acceptance"].df.columns if c.startswith("rate_at_")],
        "acceptance": {r["run"]: r for r in a["acceptance"].rows()},
        "lambda_runs": runs.filter(pl.col("stage") == "lambda").sort("lambda").to_dicts(),
        "lambda_domain": None, "lambda_reference": None,
        "isolated": [{"domain": r["run"], "alone": r["rate"], "pipeline": pipeline_rate.get(r["run"]),
                      "position": order.index(r["run"]) + 1 if r["run"] in order else None}
                     for r in rows_where(runs, stage="isolated")],
        "null": a["null_verdict"].df.row(0, named=True), "own_domain": own,
        "worst_off_domain": min(other, key=lambda r: r["mean_delta"], default=None),
        "overlap": a["overlap"].rows(),
        "quartiles": rows_where(a["quartiles"].df.filter(pl.col("quartile").is_in([1, 4])), stage="pass1"),
        "scale_share": a["scale_share"].rows(), "crossing_all": crossing.get("all"),
        "crossing": [r for p, r in crossing.items() if p != "all"], "rank2": a["rank2"].rows(),
        "fitness_modes": a["fitness_modes"].rows(), "random_flip": a["random_flip"].rows(),
        "files": {k: item.sources[0] for k, item in a.items()}, "heldout": {}, "bench": None,
        "pass1_sources": [p for k, p in (summaries or {}).items() if run_records[k]["stage"] == "pass1"],
        "quartiles_pass2": rows_where(a["quartiles"].df, stage="pass2"),
    }
    if facts["lambda_runs"]:
        # the sweep starts from the base model, as does the first pipeline domain: that run is one more point
        domain = next(r["domain"] for r in run_records.values() if r["stage"] == "lambda")
        facts["lambda_domain"] = domain
        if order and order[0] == domain:
            facts["lambda_reference"] = next(r for r in facts["pass1"] if r["run"] == domain)
    facts["rank2_max"] = max(facts["rank2"], key=lambda r: r["drift_share"], default=None)
    return facts


# Below these counts a measurement is reported as inconclusive at this scale rather than as an answer.
MIN_EXPECTED_SHARED = 5  # groups two domains would share by chance (the overlap ratio's denominator)
MIN_FLIPS = 20  # flips behind a per-flip profile or a random-flip comparison


def _resolves(rate_ci: list[tuple[float, float]], threshold: float) -> bool:
    """Whether intervals this narrow could tell a difference of ``threshold`` (fractions) apart:
    the sum of their half-widths is below it."""
    return sum((hi - lo) / 2 for lo, hi in rate_ci) < threshold


def open_questions(m: dict) -> dict:
    """What the run says about each question the paper left open (§7.3, §8, §7.1.1, §5.2, §7.5,
    §9.5), per searched model: a status ("measured", "inconclusive" or "not_measured") and the
    numbers behind it. Inconclusive: measured, but on too few flips, groups or iterations for the
    answer to stand (thresholds above)."""
    q = {}
    ov = m["overlap"]
    q["overlap"] = {"status": "not_measured" if not ov else
                    "inconclusive" if all(r["expected_shared"] < MIN_EXPECTED_SHARED for r in ov) else "measured",
                    "rows": ov}
    rf = {(r["domain"], r["kind"]): r for r in m["random_flip"]}
    pairs = [{"domain": d, "search": r, "random": rf[(d, "random")]} for (d, k), r in rf.items()
             if k == "search" and (d, "random") in rf]
    q["random_flip"] = {"status": "not_measured" if not pairs else
                        "inconclusive" if all(p["search"]["flips"] < MIN_FLIPS for p in pairs) else "measured",
                        "pairs": pairs}
    v = m["null"]
    if v["passed"]:
        status = "measured"
    else:
        resolves = _resolves([(v["trained_ci_lo"], v["trained_ci_hi"]), (v["null_ci_lo"], v["null_ci_hi"])],
                             v["threshold_pp"] / 100)
        status = "measured" if resolves else "inconclusive"
    q["null"] = {"status": status, "seeds": v["trained_seeds"], "per_search": v["trained_iterations"] //
                 max(1, v["trained_seeds"]), **{k: v[k] for k in ("gap_pp", "threshold_pp", "passed", "trained_rate_sd",
                                                                 "null_rate_sd", "intervals_disjoint")}}
    q["rank2"] = {"status": "measured" if m["rank2_max"] else "not_measured", "max": m["rank2_max"]}
    p2 = [r for r in m["quartiles_pass2"] if r["move_type"] == "scale"]
    n_scale = sum(r["flips"] for r in p2)
    q["scale_profile"] = {"status": "not_measured" if not m["quartiles_pass2"] else
                          "inconclusive" if n_scale < MIN_FLIPS else "measured", "scale_flips": n_scale}
    modes = {r["fitness"]: r for r in m["fitness_modes"]}
    prop = modes.get("focused_proportional")
    q["slack"] = {"status": "not_measured" if prop is None else
                  "inconclusive" if not prop["controls"] or not prop["crossings"] else "measured",
                  "proportional": prop, "focused": modes.get("focused")}
    s = m.get("sensitivity")
    q["sensitivity"] = {"status": "not_measured" if s is None else
                        "inconclusive" if s["overall"] == "undetermined" else "measured", "facts": s}
    return q


def cross_quantization(models: list[dict]) -> dict:
    """§8: pass-1 acceptance of every searched model with its Wilson interval, highest first;
    measured when the intervals of the highest and lowest are disjoint, else inconclusive."""
    rows = []
    for m in models:
        t = m["pass1_total"]
        if t["iterations"]:
            lo, hi = wilson_interval(t["accepted"], t["iterations"])
            rows.append({"name": m["name"], "rate": t["rate"], "ci_lo": lo, "ci_hi": hi})
    rows.sort(key=lambda r: -r["rate"])
    if len(rows) < 2:
        return {"status": "not_measured", "rows": rows}
    return {"status": "measured" if rows[0]["ci_lo"] > rows[-1]["ci_hi"] else "inconclusive", "rows": rows}


HELDOUT_PROSE = {"probes", "base_copy", "converted", "rate", "ci_lo", "ci_hi", "threshold", "generalizes",
                 "base_pass", "patched_pass"}  # the summary columns the held-out prose quotes


def evaluation(files: dict, facts: dict, t: dict) -> None:
    """Held-out and benchmark tables (rendered whatever their columns) and, where the columns the
    prose quotes are there, their facts."""
    for fitness, kinds in files["heldout"].items():
        summary, crosstab = read_table(kinds["summary"]), read_table(kinds["crosstab"])
        t[f"heldout_{fitness}"] = item(kinds["summary"], summary)
        if {"base_outcome", "patched_outcome", "count"} <= set(crosstab.columns):
            crosstab = crosstab.pivot("patched_outcome", index="base_outcome", values="count", aggregate_function="sum")
        t[f"heldout_crosstab_{fitness}"] = item(kinds["crosstab"], crosstab)
        t[f"generations_{fitness}"] = item(kinds["generations"])
        overall = rows_where(summary, domain="all") if "domain" in summary.columns else []
        facts["heldout"][fitness] = {
            "all": overall[0] if overall and HELDOUT_PROSE <= set(summary.columns) else None,
            "domains": [r for r in summary.to_dicts() if r.get("domain") != "all"], "file": kinds["summary"]}
    if files["bench"]:
        t["bench"] = item(files["bench"])
        facts["bench"] = t["bench"].rows()


def searched_model(name: str, files: dict, order: list[str]) -> tuple[dict, dict]:
    """(facts, tables) of one searched model."""
    audits = {k: item(p) for k, p in files["audits"].items()}
    runs = run_table(files["summaries"], files["runs"])
    tables = search_tables(audits, runs, files["summaries"])
    facts = search_facts(name, audits, runs.df, order, files["runs"], files["summaries"])
    evaluation(files, facts, tables)
    facts["sensitivity"] = sensitivity_section(files.get("sensitivity"), tables)
    facts["open"] = open_questions(facts)
    return facts, tables


SPREAD_STATS = ("mean", "sd", "min", "max", "ci_lo", "ci_hi")


def sensitivity_section(files: dict | None, t: dict) -> dict | None:
    """Probe-sampling sensitivity (§8) of one searched model, None where the stage did not run: the
    spread table (acceptance rates in percent, so that one column holds every metric) added to
    ``t`` as ``sensitivity``; returns the facts the prose quotes."""
    if not files:
        return None
    runs, spreads, comparison = (read_table(files[k]) for k in ("runs", "spread", "comparison"))
    percent = pl.when(pl.col("metric") == "rate").then(100.0).otherwise(1.0)
    shown = spreads.with_columns(*[pl.col(c) * percent for c in SPREAD_STATS]).with_columns(
        pl.col("metric").replace_strict({**METRIC_WORDS, "rate": "acceptance rate (%)"}),
        pl.col("source").replace_strict({"resamples": "probe resamples", "seeds": "seeds"}))
    t["sensitivity"] = TableItem(shown.select("metric", "source", "runs", *SPREAD_STATS), [files["spread"]],
                                 dict.fromkeys(SPREAD_STATS, "float"))
    compared = comparison.to_dicts()
    original = runs.filter(pl.col("kind") == "original").row(0, named=True)
    seeds = runs.filter(pl.col("kind") == "seed")
    spread = {}
    for r in spreads.to_dicts():
        spread.setdefault(r["metric"], {})[r["source"]] = r
    return {"domain": files["domain"], "seed": files["seed"], "original": original,
            "resamples": runs.filter(pl.col("kind") == "resample").height, "seeds": seeds.height,
            "seed_list": seeds["seed"].to_list(), "seed_iterations": seeds["iterations"].max(),
            "spread": spread,
            "comparison": {r["metric"]: r for r in compared},
            "by_verdict": {v: [METRIC_WORDS[r["metric"]] for r in compared if r["spread"] == v]
                           for v in ("more", "comparable", "less", "undetermined")},
            "overall": overall_spread(r["spread"] for r in compared), "factor": SPREAD_FACTOR,
            "files": {k: files[k] for k in ("resamples", "runs", "spread", "comparison")}}


def cross_model_table(facts: list[dict], models: dict, quality: pl.DataFrame | None,
                      sources: list[str]) -> TableItem:
    """§8 cross-quantization: the headline numbers of every searched model side by side
    (``models``: the manifest's source and variant of each model)."""
    rows = []
    for f in facts:
        spec = models[f["name"]]
        q = quality.filter(pl.col("model") == f["name"]).row(0, named=True) if quality is not None and \
            f["name"] in quality["model"].to_list() else {}
        rows.append({"model": f["name"], "variant": spec.get("variant") or spec["source"],
                     "heldout_nll": q.get("heldout_nll"), "pass1_rate": f["pass1_total"]["rate"],
                     "pass2_rate": (f["pass2_total"] or {}).get("rate"), "trained_rate": f["null"]["trained_rate"],
                     "null_rate": f["null"]["null_rate"], "null_gap_pp": f["null"]["gap_pp"],
                     "flips_changing_any_target_sign": (f["crossing_all"] or {}).get("flips_changing_any_target_sign"),
                     "pipeline_flips": f["pipeline_flips"]})
    return TableItem(pl.DataFrame(rows, infer_schema_length=None), sources)


def terrain_section(files: dict, tables: dict, figures: dict, pass2_order: list[str]) -> dict:
    """Geometric terrain (seed 003): per model and label, embedding geometry and the WordNet
    alignment at the token embedding and the last layer, each beside its shuffled null; of the
    patched models, the finished pipeline's (the last domain of ``pass2_order``). Adds its tables
    and figures to ``tables`` and ``figures``; returns its facts."""
    facts, raw, src = {}, {}, {}
    for key in ("embedding", "simplex", "layers", "wordnet_summary"):  # every model's table, stacked
        src[key] = [f["tables"][key] for f in files.values()]
        raw[key] = pl.concat([read_table(p) for p in src[key]], how="diagonal_relaxed")
    for m, f in files.items():
        for key, path in f["figures"].items():
            figures.setdefault(f"terrain_{key}", {})[m] = path
    emb = raw["embedding"]
    tables["terrain_embedding"] = TableItem(emb.select(
        "model", "label", "participation_ratio", "pr_per_dim", "dims_80", "dims_90", "dims_99", "cos_mean", "cos_std",
        "norm_mean", "digit_distance_corr"), src["embedding"])
    simplex = raw["simplex"].group_by("model", "label", "source", maintain_order=True).agg(
        pl.col("volume_cv").mean().alias("volume_cv"), pl.len().alias("seeds"))
    tables["terrain_simplex"] = TableItem(simplex.pivot("source", index=["model", "label"], values="volume_cv"),
                                          src["simplex"])
    tables["terrain_layers"] = TableItem(raw["layers"], src["layers"])
    wn = raw["wordnet_summary"]
    last = wn.group_by("model").agg(pl.col("layer").max().alias("last"))
    wn = wn.join(last, on="model").filter((pl.col("layer") == 0) | (pl.col("layer") == pl.col("last")))
    wn = wn.filter(pl.col("statistic").is_in(["spearman", "null_spearman"]) & pl.col("label").is_in(
        ["base"] + [l for l in wn["label"].unique().to_list() if l.startswith(("null-", f"pass2-{pass2_order[-1]}"))]))
    tables["terrain_wordnet_summary"] = TableItem(wn.select("model", "label", "layer", "statistic", "mean", "ci_lo",
                                                            "ci_hi", "seeds", "words").sort("model", "label", "layer"),
                                                  src["wordnet_summary"])
    for row in emb.filter(pl.col("label") == "base").to_dicts():
        facts[row["model"]] = {"base": row, "null": next(iter(emb.filter(
            (pl.col("model") == row["model"]) & pl.col("label").str.starts_with("null-")).to_dicts()), None),
            "wordnet": wn.filter((pl.col("model") == row["model"]) & (pl.col("label") == "base")).to_dicts()}
    return facts


def subspace_section(files: dict, tables: dict, figures: dict) -> dict:
    """Subspace sweep (seed 001): per model and candidate basis, at the largest rank, the mean
    concentration R and z over the real patches beside the random-flip null patches. Adds its
    table and figures to ``tables`` and ``figures``; returns its facts."""
    facts, parts = {}, []
    for m, f in files.items():
        figures.setdefault("subspace_scatter", {})[m] = f["figure"]
        df = read_table(f["summary"])
        k = int(df["k"].max())
        df = df.filter(pl.col("k") == k)
        agg = [pl.col(c).mean() for c in ("R_act", "z_act", "R_w", "z_w")]
        real = df.filter(pl.col("stage") != "randomflip").group_by("candidate", "kind").agg(
            *agg, pl.len().alias("patches"))
        null = df.filter(pl.col("stage") == "randomflip").group_by("candidate").agg(
            *[a.name.prefix("null_") for a in agg])
        t = real.join(null, on="candidate", how="left").with_columns(pl.lit(m).alias("model"), pl.lit(k).alias("k"))
        parts.append(t.select("model", "k", "kind", "candidate", "patches", "R_act", "z_act", "null_R_act",
                              "R_w", "z_w", "null_R_w").sort("kind", "R_w", descending=[False, True]))
        beats = t.filter((pl.col("kind") != "ceiling") & (pl.col("kind") != "random") &
                         (pl.col("R_w") > pl.col("null_R_w") * 1.2) & (pl.col("z_w") > 3))
        facts[m] = {"k": k, "beats_null": beats["candidate"].to_list(), "conclusion": f["conclusion"],
                    "patches": int(df.filter(pl.col("stage") != "randomflip")["patch"].n_unique())}
    tables["subspace"] = TableItem(pl.concat(parts, how="diagonal_relaxed"), [f["summary"] for f in files.values()])
    return facts


def bits_section(files: dict, models: dict, tables: dict, quality: pl.DataFrame | None = None) -> dict:
    """§3.3: the bits-per-weight comparison of every model in ``files`` (the manifest's ``bits``;
    ``models`` its source and variant per model; ``quality`` the quality table, for each model's
    held-out loss); adds its two tables to ``tables``, returns the verdict (neagari.report.bits)
    with the formats compared."""
    rows, sources = [], []
    losses = {}
    if quality is not None:
        losses = {r["model"]: r for r in quality.unique("model", keep="first", maintain_order=True).to_dicts()}
    for name, f in files.items():
        fmt = bits.mlp_format({n: r.ggml_type for n, r in GGUFFile(f["gguf"]).tensors.items()})
        verdict = read_table(f["null_verdict"])
        rows.append(bits.model_rows(name, fmt, bits.training_of(models[name]), read_table(f["acceptance"]),
                                    verdict.row(0, named=True) if verdict.height else None,
                                    read_table(f["crossing_flips"]), losses.get(name)))
        sources += [f["acceptance"], f["null_verdict"], f["crossing_flips"]]
    table, domains = bits.comparison_tables(rows)
    if losses:
        sources += tables["quality"].sources if "quality" in tables else []
    tables["bits"] = TableItem(table, sources)
    tables["bits_domains"] = TableItem(domains, sources)
    return {**bits.bits_verdict(table), "formats": sorted(set(table["format"].to_list())),
            "rows": table.to_dicts()}


def comparison_tables(models: list[dict], tables: dict, published: pub.Published) -> None:
    """The headline tables with the paper's figure beside this run's (added to ``tables``)."""
    def src(*names):
        return [p for n in names if n in tables for p in tables[n].sources]

    made = {"compare_pass1": pub.pass1_comparison(models, published),
            "compare_null": pub.null_comparison(models, published, src("null_verdict")),
            "compare_targeted": pub.targeted_comparison(models, published, src("fitness_modes")),
            "compare_heldout": pub.heldout_comparison(models, published),
            "compare_crossing": pub.crossing_comparison(models, published, src("crossing")),
            "compare_bench": pub.bench_comparison(models, published, src("bench")),
            "findings": findings(models, published, src("null_verdict", "crossing", "fitness_modes") +
                                 [m["heldout"][f]["file"] for m in models for f in m["heldout"]])}
    tables.update({k: v for k, v in made.items() if v is not None})


def paper_content(man: dict, build_inputs: list[str], published_path: str | None = None,
                  config: dict | None = None, fidelity_path: str | None = None) -> tuple[dict, dict, dict]:
    """(context, tables, figures) of the paper of one manifest: the template's context, every
    table by name and every figure set by name (model -> file). ``build_inputs`` are the files the
    build read (the page's build summary); ``published_path`` the paper's published figures
    (resources/paper/published.yaml), ``config`` the run's configuration (its models' sources and
    the embedded model's shape, for the page's account of what this run is; with its search block,
    also the choices of the fidelity table ``fidelity_path``, resources/paper/fidelity.yaml)."""
    tables, figures, models = {}, {}, []
    per_model_tables = {}
    for name, files in man["searched"].items():
        facts, per_model_tables[name] = searched_model(name, files, man["order"])
        models.append(facts)
        for key, path in files["figures"].items():
            figures.setdefault(key, {})[name] = path
    for key in dict.fromkeys(k for t in per_model_tables.values() for k in t):
        tables[key] = concat_tables({m: t[key] for m, t in per_model_tables.items() if key in t})
    quality = None
    if man["quality"]:
        quality = read_table(man["quality"]["table"])
        tables["quality"] = item(man["quality"]["table"], quality)
        figures["training"] = man["quality"]["training"]
    if models:
        sources = [p for t in ("runs", "null_verdict", "crossing", "quality") if t in tables for p in tables[t].sources]
        tables["cross_model"] = cross_model_table(models, man["models"], quality, sources)
    published = {}
    if man["published"]:
        for key, path in man["published"].items():
            tables[f"published_{key}"] = item(path)
        published = {"crossing": {r["patch"]: r for r in tables["published_crossing"].rows()}}
    quality_facts = {}
    if quality is not None:
        for row in quality.unique("model", keep="first", maintain_order=True).to_dicts():
            quality_facts[row["model"]] = row
    # manifests without a pass-2 order (no pass 2, or written before it had one): the pass-1 order
    pass2_order = man.get("pass2_order") or man["order"]
    terrain = terrain_section(man["terrain"], tables, figures, pass2_order) if man.get("terrain") else {}
    subspace = subspace_section(man["subspace"], tables, figures) if man.get("subspace") else {}
    bits_facts = bits_section(man["bits"], man["models"], tables, quality) if man.get("bits") else None
    paper_figures = pub.Published(published_path) if published_path else None
    run = {"models": pub.describe_models(config or {"models": man["models"]}, list(man["searched"]), paper_figures),
           "scale": None}
    if paper_figures is not None and models:
        comparison_tables(models, tables, paper_figures)
        run["scale"] = pub.scale(tables["runs"].df, paper_figures)
    run["paper_models"] = [d for d in run["models"] if d["paper_model"] and d["searched"]]
    verdicts, rules = {}, {}
    if "findings" in tables:
        found = tables["findings"]
        for r in found.rows():
            verdicts.setdefault(r["model"], []).append(r["verdict"])
            rules.setdefault(f"{r['section']} {r['finding']}", r["rule"])
        # each rule once, below the table, rather than truncated in every model's row
        tables["findings"] = TableItem(found.df.drop("rule"), found.sources,
                                       {k: v for k, v in found.formats.items() if k != "rule"})
    run["findings"] = {m: {v: vs.count(v) for v in dict.fromkeys(vs)} for m, vs in verdicts.items()}
    run["finding_rules"] = rules
    if fidelity_path and config and config.get("search") is not None:
        rows = fidelity.table_rows(fidelity.load(fidelity_path), {"this run": config})
        df = pl.DataFrame(rows).drop("key")
        tables["fidelity"] = TableItem(df, [fidelity_path], {c: "prose" for c in df.columns})
    run["fidelity"] = "fidelity" in tables
    context = {"run_name": man["run_name"], "config_models": man["models"], "order": man["order"],
               "pass2_order": pass2_order, "terrain": terrain,
               "paper": paper_figures, "run": run, "cross_quantization": cross_quantization(models),
               "bits": bits_facts,
               "subspace": subspace,
               "models": models, "quality": quality_facts, "quality_report": (man["quality"] or {}).get("report"),
               "published": published, "build": paper.build_summary(build_inputs)}
    return context, tables, figures


def write_paper(man: dict, build_inputs: list[str], template: str, shell: str, css: str, html_path: str,
                markdown_path: str, published_path: str | None = None,
                config: dict | None = None, fidelity_path: str | None = None) -> tuple[dict, dict, dict]:
    """Render the paper of one manifest to ``markdown_path`` and the self-contained page
    ``html_path`` (images beside it); returns (context, tables, figures). ``published_path`` and
    ``config`` as in :func:`paper_content`."""
    context, tables, figures = paper_content(man, build_inputs, published_path, config, fidelity_path)
    out_dir = Path(html_path).parent
    markdown = paper.render_template(template, context, paper.Renderer("md", out_dir, tables, figures))
    Path(markdown_path).write_text(markdown, encoding="utf-8")
    body = paper.render_template(template, context, paper.Renderer("html", out_dir, tables, figures))
    page = paper.render_page(body, shell, css, title=f"Neagari, regenerated ({man['run_name']})")
    Path(html_path).write_text(page, encoding="utf-8")
    return context, tables, figures
