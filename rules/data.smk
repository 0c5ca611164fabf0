# Stage 0: the embedded model's data. Deterministic given the seed: a procedural corpus with
# disjoint train/held-out content, probe sets, verbatim sets and evaluation sets.


N_WORDNET_TEXTS = config["embedded"]["corpus"]["n_wordnet"]


rule build_corpus:
    priority: EMBEDDED_CHAIN_PRIORITY
    input:
        # WordNet-derived text (neagari.embedded.toydata.wordnet_text) needs WordNet 3.0 (rule install_wordnet)
        wordnet=[WORDNET_DIR] if N_WORDNET_TEXTS else [],
    output:
        corpus="results/data/corpus.{split}.jsonl",
    params:
        seed=config["embedded"]["seed"],
        n_per_domain=lambda wc: config["embedded"]["corpus"][f"n_{wc.split}"],
        n_wordnet=lambda wc: (
            N_WORDNET_TEXTS
            if wc.split == "train"
            else round(
                N_WORDNET_TEXTS * config["embedded"]["corpus"]["n_heldout"] / config["embedded"]["corpus"]["n_train"]
            )
        ),
    wildcard_constraints:
        split="train|heldout",
    log:
        "logs/data/corpus.{split}.log",
    benchmark:
        "logs/data/corpus.{split}.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_corpus.py"


rule build_task_sets:
    priority: EMBEDDED_CHAIN_PRIORITY
    output:
        probes=expand("results/data/probes/{domain}.json", domain=TASK_PROBE_SETS),
        verbatim_train="results/data/probes/verbatim.json",
        verbatim_heldout="results/data/heldout/verbatim_heldout.json",
        eval_sets="results/data/eval/eval_sets.jsonl",
    params:
        seed=config["embedded"]["seed"],
        n_eval=config["embedded"]["n_eval_items"],
    log:
        "logs/data/task_sets.log",
    benchmark:
        "logs/data/task_sets.bench.tsv"
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_task_sets.py"
