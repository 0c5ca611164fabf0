# Stage: probe-sampling sensitivity (PAPER.md §8). One pass-1 search (search.sensitivity.domain, by
# default the null baseline's) is run again on bootstrap resamples of its targets and controls, by the
# search rule's own script, each resample an ordinary probe file; its spread over the resamples is set
# against the seed-to-seed spread of the null baseline's trained side, whose searches are read, not
# rerun (neagari.analysis.sensitivity). Opt-in (search.sensitivity); its settings and helpers are in
# common.smk.


rule resample_probes:
    input:
        probes=lambda wc: sensitivity_source(wc.model).probes,
        controls=lambda wc: sensitivity_source(wc.model).controls,
        promoted=lambda wc: sensitivity_source(wc.model).promoted,
    output:
        probes=expand("results/sensitivity/{{model}}/{{domain}}-r{i}/probes.json", i=SENSITIVITY_RESAMPLES),
        table="results/sensitivity/{model}/{domain}.resamples.parquet",
    params:
        seed=SENSITIVITY_SEED,
        resamples=SENSITIVITY_RESAMPLES,
        # the pass-1 run's promotion settings: with them it kept only the first of its file's own controls
        promotion=PIPELINE_PROMOTION,
    wildcard_constraints:
        model=wildcard_choice(SENSITIVITY_MODELS),
        domain=wildcard_choice([SENSITIVITY_DOMAIN] if SENSITIVITY_DOMAIN else []),
    threads: 1
    log:
        "logs/sensitivity/{model}/{domain}.resamples.log",
    benchmark:
        "logs/sensitivity/{model}/{domain}.resamples.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=5,
    script:
        "../scripts/resample_probes.py"


# The search rule's script names a run by its {model}/{stage}/{run} wildcards: here {stage} is
# always "sensitivity", the first directory of the path, so that the run is labelled as what it is.
rule sensitivity_search:
    input:
        model=lambda wc: sensitivity_source(wc.model).start,
        probes="results/sensitivity/{model}/{run}/probes.json",
        controls=[],
        promoted=[],
        iterations_from=[],
    output:
        patch="results/{stage}/{model}/{run}/patch.json",
        upstream="results/{stage}/{model}/{run}/patch.upstream.json",
        iterations="results/{stage}/{model}/{run}/iterations.parquet",
        summary="results/{stage}/{model}/{run}/summary.json",
        promoted="results/{stage}/{model}/{run}/promoted.json",
    params:
        # the pass-1 run's settings, seed included: only the probes differ
        settings=lambda wc: {
            **{k: SEARCH[k] for k in SEARCH_COMMON},
            **sensitivity_source(wc.model).search_settings(),
        },
        promotion=None,  # a resample's targets become controls of no later search
        device=config["device"],
        dtype=config["weights_dtype"],
    wildcard_constraints:
        stage="sensitivity",
        model=wildcard_choice(SENSITIVITY_MODELS),
        run=wildcard_choice(sensitivity_runs()),
    threads: 1
    log:
        "logs/{stage}/{model}/{run}.log",
    benchmark:
        "logs/{stage}/{model}/{run}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    script:
        "../scripts/search.py"


rule sensitivity_summary:
    input:
        original_summary=lambda wc: sensitivity_source(wc.model).file("summary.json"),
        original_iterations=lambda wc: sensitivity_source(wc.model).file("iterations.parquet"),
        resample_summaries=expand("results/sensitivity/{{model}}/{run}/summary.json", run=sensitivity_runs()),
        resample_iterations=expand("results/sensitivity/{{model}}/{run}/iterations.parquet", run=sensitivity_runs()),
        seed_summaries=lambda wc: [r.file("summary.json") for r in sensitivity_seed_runs(wc.model)],
        seed_iterations=lambda wc: [r.file("iterations.parquet") for r in sensitivity_seed_runs(wc.model)],
    output:
        runs="results/sensitivity/{model}/{domain}.runs.parquet",
        spread="results/sensitivity/{model}/{domain}.spread.parquet",
        comparison="results/sensitivity/{model}/{domain}.comparison.parquet",
    params:
        # every run is read over the pass-1 run's budget (a longer null-baseline search, its first part)
        upto=lambda wc: sensitivity_source(wc.model).iterations,
        original=lambda wc: sensitivity_source(wc.model).label,
        resamples=SENSITIVITY_RESAMPLES,
        resample_runs=[f"sensitivity/{run}" for run in sensitivity_runs()],
        seed_runs=lambda wc: [r.label for r in sensitivity_seed_runs(wc.model)],
    wildcard_constraints:
        model=wildcard_choice(SENSITIVITY_MODELS),
        domain=wildcard_choice([SENSITIVITY_DOMAIN] if SENSITIVITY_DOMAIN else []),
    threads: 1
    log:
        "logs/sensitivity/{model}/{domain}.summary.log",
    benchmark:
        "logs/sensitivity/{model}/{domain}.summary.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/sensitivity_summary.py"
