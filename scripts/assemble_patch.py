"""Rule assemble_patch: the patched GGUF, checked self-inverse (applying again gives the base)."""
import tempfile
from pathlib import Path

from neagari.hashing import sha256_file
from neagari.search.patch import apply_patch_files
from neagari.workflow.smk import rule_context

with rule_context(snakemake, config_keys=[]) as log:
    base_sha = sha256_file(snakemake.input.model)
    sha = apply_patch_files(snakemake.input.model, snakemake.output.gguf, [snakemake.input.patch])
    with tempfile.TemporaryDirectory(dir=Path(snakemake.output.gguf).parent) as tmp:
        back = apply_patch_files(snakemake.output.gguf, Path(tmp) / "undo.gguf", [snakemake.input.patch])
    if back != base_sha:
        raise RuntimeError(f"patch is not self-inverse: {back} != base {base_sha}")
    log.info("patched %s (sha256 %s); undo restores the base %s", snakemake.output.gguf, sha, base_sha)
