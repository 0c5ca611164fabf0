"""Snakemake glue (rule context), provenance records, pinned downloads, WordNet installation. Imports
only hashing and tables: every other subpackage may use it."""
