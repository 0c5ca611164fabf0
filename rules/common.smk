# Config validation and the target list; every stage's paths are built here from the config.
from snakemake.utils import validate


validate(config, schema="../config/schema.yaml")

MODELS = list(config["models"])
PROBE_SETS = list(config["probe_sets"])
ENV = "../envs/neagari.yaml"


def model_spec(wildcards):
    return config["models"][wildcards.model]


def probe_set_path(wildcards):
    return config["probe_sets"][wildcards.probeset]


def all_targets():
    return expand(
        "results/figures/gaps/{model}/{probeset}.png", model=MODELS, probeset=PROBE_SETS
    )
