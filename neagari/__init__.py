"""neagari: XOR search over 1-bit (Q1_0 GGUF) Qwen3-architecture models, and the Neagari paper's
workflow. Subpackages, lowest first (imports run downward only):

  files, hashing, tables, stats   shared helpers (no neagari imports but each other)
  workflow                 Snakemake glue, provenance, downloads, WordNet (uses only hashing)
  engine                   the GGUF format, the Qwen3 model, loading, scoring, generation
  search, embedded, evaluation   the search; the embedded model; evaluating models (engine only)
  analysis                 audits, subspace sweep, geometric terrain (reads the three above)
  report                   the paper page and its figures
  cli                      the command line (may use everything)
"""

__version__ = "0.1.0"
