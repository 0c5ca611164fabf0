"""Rule train_tokenizer: byte-level BPE on the training corpus (Qwen-style specials)."""
import json

from neagari.workflow.smk import rule_context
from neagari.engine.tokenizer import train_bpe

with rule_context(snakemake, config_keys=["embedded"]) as log:
    texts = [json.loads(line)["text"] for line in open(snakemake.input.corpus)]
    tok = train_bpe(texts, snakemake.params.vocab_size)
    tok.save(snakemake.output.tokenizer)
    log.info("vocabulary of %d tokens from %d texts", tok.get_vocab_size(), len(texts))
