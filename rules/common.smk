# Config validation and the target list; every stage's paths are built here from the config.
from snakemake.utils import validate


validate(config, schema="../config/schema.yaml")

ENV = "../envs/neagari.yaml"
MODELS = list(config["models"])
FIXTURE_MODELS = [m for m, s in config["models"].items() if s["source"] == "fixture"]
EMBEDDED_MODELS = [m for m, s in config["models"].items() if s["source"] == "embedded"]
PROBE_SETS = list(config["probe_sets"])
# probe sets the embedded data stage generates (the paper's five domains + controls)
TASK_PROBE_SETS = ["editing", "instruction", "tool_calling", "math", "coding", "controls"]
# WordNet 3.0, installed from PyPI by rule install_wordnet (terrain.smk); read by the corpus
# (WordNet-derived text) and by the terrain stage
WORDNET_DIR = config.get("terrain", {}).get("wordnet_dir", "results/wordnet")
# (a directory output: its provenance record holds every file's sha256)
# The embedded-model chain (corpus to quality report) runs before the searches: the issue gives it
# 25 minutes, and searches interleaved with it took it past that.
EMBEDDED_CHAIN_PRIORITY = 10


def wildcard_choice(names):
    """A wildcard regex matching exactly these names (none: matches nothing)."""
    return "|".join(regex_escape(n) for n in names) if names else "(?!x)x"


def regex_escape(name):
    import re

    return re.escape(name)


def probe_set_path(wildcards):
    return config["probe_sets"][wildcards.probeset]


def all_targets():
    targets = expand(
        "results/figures/gaps/{model}/{probeset}.png", model=MODELS, probeset=PROBE_SETS
    )
    targets += search_targets()
    targets += EVAL_TARGETS
    if config.get("terrain", {}).get("enabled", True) and TERRAIN_MODELS:
        targets += terrain_targets()
    targets += subspace_targets()
    targets += paper_targets()
    if EMBEDDED_MODELS:
        targets.append("results/quality/report.md")
        targets += expand("results/figures/training/{model}.loss.png", model=EMBEDDED_MODELS)
    return targets


# ---------------------------------------------------------------------------- searches
SEARCH = config.get("search", {})
SEARCH_MODELS = SEARCH.get("models", []) if SEARCH else []
ORDER = SEARCH["pipeline"]["order"] if SEARCH else []


def _stage_chain(stage):
    """(domain order, model file the first domain starts from) of a sequential stage."""
    if stage == "pass1":
        return ORDER, "results/models/{model}.gguf"
    return ORDER, f"results/patched/{{model}}/pass1/{ORDER[-1]}.gguf"


def search_runs(model):
    """Every (stage, run) searched on one model."""
    runs = [("pass1", d) for d in ORDER]
    if SEARCH["scale_pass"]["enabled"]:
        runs += [("pass2", d) for d in ORDER]
    runs += [("isolated", d) for d in SEARCH["isolation"]["domains"]]
    lam = SEARCH["lambda_sweep"]
    runs += [("lambda", f"{lam['domain']}-lam{l}") for l in lam["lambdas"]]
    runs += [("targeted", f) for f in SEARCH["targeted"]["fitnesses"]]
    nb = SEARCH["null_baseline"]
    runs += [("nullbase", f"{kind}-s{s}") for kind in ("trained", "null") for s in nb["seeds"]]
    runs += [("randomflip", d) for d in SEARCH["random_flip"]["domains"]]
    return runs


def search_spec(model, stage, run):
    """Everything one search run needs: starting model, probes, controls, settings."""
    base = f"results/models/{model}.gguf"
    controls = [f"results/probes/{model}/{c}.json" for c in SEARCH["controls"]]
    spec = dict(model=base, probes=None, controls=controls, promoted=[], fitness="average", lam=1.0,
                iterations=None, scale_prob=0.0, seed=config["seed"], accept_all=False, iterations_from=[])
    if stage in ("pass1", "pass2"):
        order, first = _stage_chain(stage)
        i = order.index(run)
        spec["model"] = first.format(model=model) if i == 0 else f"results/patched/{model}/{stage}/{order[i - 1]}.gguf"
        spec["probes"] = f"results/probes/{model}/{run}.json"
        d = SEARCH["pipeline"]["domains"][run]
        spec["lam"] = d["lambda"]
        if stage == "pass1":
            spec["iterations"] = d["iterations"]
            if i > 0:
                spec["promoted"] = [f"results/search/{model}/pass1/{order[i - 1]}/promoted.json"]
        else:
            spec["iterations"] = SEARCH["scale_pass"]["iterations"][run]
            spec["scale_prob"] = SEARCH["scale_pass"]["scale_prob"]
            spec["promoted"] = [f"results/search/{model}/pass1/{ORDER[-1]}/promoted.json"]
    elif stage == "isolated":
        d = SEARCH["pipeline"]["domains"][run]
        spec.update(probes=f"results/probes/{model}/{run}.json", lam=d["lambda"], iterations=d["iterations"])
    elif stage == "lambda":
        lam = SEARCH["lambda_sweep"]
        domain, value = run.split("-lam")
        spec.update(probes=f"results/probes/{model}/{domain}.json", lam=float(value), iterations=lam["iterations"])
    elif stage == "targeted":
        t = SEARCH["targeted"]
        spec.update(probes=f"results/probes/{model}/{t['probes']}.json", fitness=run, lam=t["lambda"],
                    iterations=t["iterations"], controls=[f"results/probes/{model}/{c}.json" for c in t["controls"]])
    elif stage == "nullbase":
        nb = SEARCH["null_baseline"]
        kind, seed = run.split("-s")
        if kind == "null":
            spec["model"] = f"results/models/null/{model}-s{seed}.gguf"
        spec.update(probes=f"results/probes/{model}/{nb['domain']}.json", lam=nb["lambda"],
                    iterations=nb["iterations"], seed=int(seed))
    elif stage == "randomflip":
        spec.update(probes=f"results/probes/{model}/{run}.json", accept_all=True,
                    iterations_from=[f"results/search/{model}/pass1/{run}/summary.json"])
    return spec


def search_targets():
    targets = [
        f"results/patched/{m}/{stage}/{run}.gguf"
        for m in SEARCH_MODELS
        for stage, run in search_runs(m)
    ]
    for m in SEARCH_MODELS:
        targets += [f"results/audits/{m}/acceptance.parquet", f"results/audits/{m}/rank2_drift.parquet"]
    if config.get("published_patches"):
        targets.append("results/audits/published/boundary_crossing.summary.parquet")
    return targets


# ---------------------------------------------------------------------------- audits
def audit_runs(model):
    return [(s, r) for s, r in search_runs(model)]


def audit_inputs(wildcards):
    files = []
    for s, r in audit_runs(wildcards.model):
        d = f"results/search/{wildcards.model}/{s}/{r}"
        files += [f"{d}/patch.json", f"{d}/summary.json", f"{d}/iterations.parquet"]
    return files


def stage_models(model):
    """(labels, files): the base model, then the model after each domain of pass 1 (and pass 2)."""
    labels, files = ["base"], [f"results/models/{model}.gguf"]
    stages = ["pass1"] + (["pass2"] if SEARCH["scale_pass"]["enabled"] else [])
    for s in stages:
        for d in ORDER:
            labels.append(f"{s}/{d}")
            files.append(f"results/patched/{model}/{s}/{d}.gguf")
    return labels, files
