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
    if EMBEDDED_MODELS:
        targets.append("results/quality/report.md")
        targets += expand("results/figures/training/{model}.loss.png", model=EMBEDDED_MODELS)
    return targets
