# Helpers of the figure and paper rules (kept apart from rules, as Snakemake's linter asks).


FIGURE_SEED = config["seed"]
NEAREST_WRONG = 3  # wrong targets followed in the trajectory figure (the paper's §7.6 example)


def search_run_files(model, kind, stages):
    """One file of every search run of these stages (see search_run_ids for which is which)."""
    return [r.file(kind) for r in runs_of(RUNS, model, stages)]


def search_run_ids(model, stages):
    """[stage, run] of each file search_run_files lists, in its order."""
    return [[r.stage, r.name] for r in runs_of(RUNS, model, stages)]


def evaluation_included():
    """Whether the evaluation stage's rules are part of this workflow (checked when the DAG is
    built, after every include, so the include order does not matter)."""
    return rules.has("eval_heldout_summary") and rules.has("eval_benchmark_compare")


def evaluation_outputs(model):
    """(held-out files per fitness, benchmark comparison or None): what the evaluation stage makes
    for this model, as its own target list (EVAL_TARGETS) says; nothing without that stage."""
    if not evaluation_included():
        return {}, None
    listed = globals().get("EVAL_TARGETS")

    def made(path):
        return listed is None or path in listed

    heldout = {}
    for f in SEARCH["targeted"]["fitnesses"]:
        kinds = {k: f"results/eval/{model}/heldout/{f}.{k}.parquet" for k in ("crosstab", "summary", "generations")}
        if all(made(p) for p in kinds.values()):
            heldout[f] = kinds
    bench = f"results/eval/{model}/bench/comparison.parquet"
    return heldout, bench if made(bench) else None


PAPER_FIGURES = [
    "acceptance",
    "fitness",
    "trajectories",
    "crossing",
    "deltas",
    "layers",
    "interference",
    "null_baseline",
]
PAPER_AUDITS = {  # role in the paper -> results/audits/{model}/<name>.parquet
    "acceptance": "acceptance",
    "lambda_sweep": "lambda_sweep",
    "crossing": "boundary_crossing.summary",
    "crossing_flips": "boundary_crossing.flips",
    "quartiles": "interference_quartiles",
    "scale_share": "scale_share",
    "layers": "layer_projection",
    "overlap": "group_overlap",
    "null_table": "null_baseline",
    "null_verdict": "null_baseline.verdict",
    "fitness_modes": "fitness_modes",
    "random_flip": "random_flip_null",
    "interference": "interference_matrix",
    "rank2": "rank2_drift",
}


def paper_model_files(model):
    heldout, bench = evaluation_outputs(model)
    files = {
        "figures": {f: f"results/figures/{f}/{model}.png" for f in PAPER_FIGURES},
        "audits": {k: f"results/audits/{model}/{v}.parquet" for k, v in PAPER_AUDITS.items()},
        "summaries": {r.label: r.file("summary.json") for r in runs_of(RUNS, model)},
        # the run of each summary (by the same key): its stage, wildcard name and probe domain
        "runs": {r.label: {"stage": r.stage, "run": r.name, "domain": r.domain} for r in runs_of(RUNS, model)},
        "heldout": heldout,
        "bench": bench,
        "sensitivity": sensitivity_files(model),  # None where the stage does not run
    }
    if heldout:
        files["figures"]["heldout"] = f"results/figures/heldout/{model}.png"
    return files


def bits_files(model):
    """What the bits-per-weight comparison reads of one model: its GGUF (the format of its MLP
    weights) and its search audits (pass-1 acceptance, null baseline, boundary crossings)."""
    return {
        "gguf": f"results/models/{model}.gguf",
        "acceptance": f"results/audits/{model}/acceptance.parquet",
        "null_verdict": f"results/audits/{model}/null_baseline.verdict.parquet",
        "crossing_flips": f"results/audits/{model}/boundary_crossing.flips.parquet",
    }


def paper_manifest():
    """Every file the paper reads, by role; the build script receives it as a param."""
    models = {m: {"source": s["source"], "variant": s.get("variant")} for m, s in config["models"].items()}
    manifest = {
        "run_name": config["run_name"],
        "models": models,
        "order": ORDER,
        "pass2_order": PASS2_ORDER if SEARCH and SEARCH["scale_pass"]["enabled"] else [],
        "searched": {m: paper_model_files(m) for m in SEARCH_MODELS},
        # §3.3 bits per weight: every searched model and each one searched for the comparison only
        "bits": {m: bits_files(m) for m in SEARCH_MODELS + COMPARISON_MODELS},
        "quality": None,
        "published": None,
        "terrain": None,
        "subspace": None,
    }
    if EMBEDDED_MODELS:
        manifest["quality"] = {
            "table": "results/quality/quality.parquet",
            "report": "results/quality/report.md",
            "training": {m: f"results/figures/training/{m}.loss.png" for m in EMBEDDED_MODELS},
        }
    if rules.has("terrain_collect") and TERRAIN_MODELS:
        manifest["terrain"] = {
            m: {
                "tables": {
                    t: f"results/terrain/{m}/{t}.parquet" for t in ("embedding", "simplex", "layers", "wordnet_summary")
                },
                "figures": {f: f"results/figures/terrain/{m}/{f}.png" for f in TERRAIN_FIGURES},
            }
            for m in TERRAIN_MODELS
        }
    if rules.has("subspace_summary") and subspace_models():
        manifest["subspace"] = {
            m: {
                "summary": f"results/subspace/{m}/summary.parquet",
                "conclusion": f"results/subspace/{m}/conclusion.md",
                "figure": f"results/figures/subspace/{m}.scatter.png",
            }
            for m in subspace_models()
        }
    if config["published_patches"]:
        manifest["published"] = {
            k: f"results/audits/published/{v}.parquet"
            for k, v in {
                "crossing": "boundary_crossing.summary",
                "scale_share": "scale_share",
                "acceptance": "acceptance",
            }.items()
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
    paths = manifest_paths(
        {
            k: v
            for k, v in paper_manifest().items()
            if k in ("searched", "bits", "quality", "published", "terrain", "subspace")
        }
    )
    return list(dict.fromkeys(paths))


def paper_targets():
    return ["results/paper/index.html", "results/paper/paper.md"]
