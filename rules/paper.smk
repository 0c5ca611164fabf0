# Stage: the paper. One page regenerated from the result files: every number, table and figure is
# read from a file and shown with the provenance record beside it. `paper_manifest()` says which
# files go where; it is built from the config, so parts the config leaves out (published patches,
# searches, the embedded models) and stages whose rules are not in this workflow (evaluation)
# simply drop out of the paper.

PAPER_FIGURES = ["acceptance", "fitness", "trajectories", "crossing", "deltas", "layers", "interference",
                 "null_baseline"]
PAPER_AUDITS = {
    "acceptance": "acceptance", "crossing_flips": "boundary_crossing.flips", "lambda_sweep": "lambda_sweep", "crossing": "boundary_crossing.summary",
    "quartiles": "interference_quartiles", "scale_share": "scale_share", "layers": "layer_projection",
    "overlap": "group_overlap", "null_table": "null_baseline", "null_verdict": "null_baseline.verdict",
    "fitness_modes": "fitness_modes", "random_flip": "random_flip_null", "interference": "interference_matrix",
    "rank2": "rank2_drift",
}


def paper_has_evaluation():
    """Whether the evaluation stage's rules are part of this workflow (checked when the DAG is
    built, after every include, so the include order does not matter)."""
    return rules.has("eval_heldout_summary") and rules.has("eval_benchmark_compare")


def paper_model_files(model):
    files = {
        "figures": {f: f"results/figures/{f}/{model}.png" for f in PAPER_FIGURES},
        "audits": {k: f"results/audits/{model}/{v}.parquet" for k, v in PAPER_AUDITS.items()},
        "summaries": {f"{s}/{r}": f"results/search/{model}/{s}/{r}/summary.json" for s, r in search_runs(model)},
        "heldout": {},
        "bench": None,
    }
    if paper_has_evaluation():
        files["figures"]["heldout"] = f"results/figures/heldout/{model}.png"
        files["heldout"] = {
            f: {kind: f"results/eval/{model}/heldout/{f}.{kind}.parquet" for kind in ("crosstab", "summary", "generations")}
            for f in SEARCH["targeted"]["fitnesses"]
        }
        files["bench"] = f"results/eval/{model}/bench/comparison.parquet"
    return files


def paper_manifest():
    """Every file the paper reads, by role; the build script receives it as a param."""
    models = {m: {"source": s["source"], "variant": s.get("variant")} for m, s in config["models"].items()}
    manifest = {
        "run_name": config.get("run_name", "run"),
        "models": models,
        "order": ORDER,
        "searched": {m: paper_model_files(m) for m in SEARCH_MODELS},
        "quality": None,
        "published": None,
    }
    if EMBEDDED_MODELS:
        manifest["quality"] = {
            "table": "results/quality/quality.parquet",
            "report": "results/quality/report.md",
            "training": {m: f"results/figures/training/{m}.loss.png" for m in EMBEDDED_MODELS},
        }
    if config.get("published_patches"):
        manifest["published"] = {
            k: f"results/audits/published/{v}.parquet"
            for k, v in {"crossing": "boundary_crossing.summary", "scale_share": "scale_share",
                         "acceptance": "acceptance"}.items()
        }
    return manifest


def manifest_paths(node):
    """Every path in a manifest (nested dicts of paths), in a stable order."""
    if isinstance(node, str):
        return [node] if node.startswith("results/") else []
    if isinstance(node, dict):
        return [p for v in node.values() for p in manifest_paths(v)]
    if isinstance(node, (list, tuple)):
        return [p for v in node for p in manifest_paths(v)]
    return []


def paper_inputs(wildcards):
    paths = manifest_paths({k: v for k, v in paper_manifest().items() if k in ("searched", "quality", "published")})
    return list(dict.fromkeys(paths))


def paper_targets():
    return ["results/paper/index.html", "results/paper/paper.md"]


rule build_paper:
    input:
        results=paper_inputs,
        template="resources/paper/paper.md.j2",
        shell="resources/paper/paper.html.j2",
        css="resources/paper/paper.css",
    output:
        html=report("results/paper/index.html", caption="../report/paper.rst", category="Paper"),
        markdown="results/paper/paper.md",
    params:
        manifest=lambda wildcards: paper_manifest(),
    log:
        "logs/paper/build.log",
    benchmark:
        "logs/paper/build.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_paper.py"
