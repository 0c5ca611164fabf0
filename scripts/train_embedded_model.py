"""Rules train_embedded_model / train_embedded_float: train one variant, export it, log the loss.

qat: the Q1_0 GGUF holds the training forward's own signs and scales. fp: the float GGUF (F16
linear weights, F32 norms), which rule quantize_posthoc rounds to Q1_0 with llama.cpp's rule.

With embedded.train.checkpoint_dir set, each model checkpoints to its own subdirectory
(<checkpoint_dir>/<model>), so a stopped job resumes where it was and the variants never share a file.
"""
import logging
import os

import polars as pl
import tokenizers
import torch

from neagari.engine.config import ModelConfig
from neagari.engine.export import write_model
from neagari.engine.gguf_io import TYPE_F16
from neagari.workflow.smk import rule_context
from neagari.embedded.schemas import TrainingLoss
from neagari.tables import write_table
from neagari.engine.tokenizer import gguf_tokenizer_metadata
from neagari.embedded.toydata import CORPUS_ONLY
from neagari.embedded.train import TrainConfig, block_type, build_model, corpus_rows, export_weights, train

p = snakemake.params
with rule_context(snakemake, config_keys=["embedded", "models"], seed=p.seed) as log:
    tok = tokenizers.Tokenizer.from_file(snakemake.input.tokenizer)
    where = snakemake.config["embedded"]["train"]  # checkpoint settings: not params (see the rule)
    settings = dict(p.train, checkpoint_every_s=where["checkpoint_every_s"])
    if where["checkpoint_dir"] is not None:
        root = os.path.expandvars(os.path.expanduser(where["checkpoint_dir"]))
        settings["checkpoint_dir"] = os.path.join(root, snakemake.wildcards.model)
    tc = TrainConfig(**settings, seed=p.seed)
    if tc.checkpoint_dir is not None:
        # Snakemake clears a job's log before it starts, so the log of every run of this training
        # (a killed one and the job that resumes it) is kept beside the checkpoint and repeated here.
        os.makedirs(tc.checkpoint_dir, exist_ok=True)
        runs_log = os.path.join(tc.checkpoint_dir, "train.log")
        if os.path.exists(runs_log):
            log.info("earlier runs of this training (%s):\n%s", runs_log, open(runs_log).read().rstrip())
        handler = logging.FileHandler(runs_log, mode="a")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
    torch.set_num_threads(tc.threads)

    drills = set(CORPUS_ONLY) if (tc.copy_steps or tc.copy_fraction) else None
    train_rows, copy_rows = corpus_rows(snakemake.input.corpus, tok, tc, drills)
    eval_rows, _ = corpus_rows(snakemake.input.heldout, tok, tc)
    log.info("%d training rows, %d held-out rows of %d tokens", len(train_rows), len(eval_rows), tc.seq_len + 1)
    if copy_rows is not None:
        log.info("curriculum: the first %d steps on %d copy-drill rows", tc.copy_steps, len(copy_rows))
    log.info("autocast: %s (forward and loss of the training steps; evaluations in fp32)", tc.autocast)
    if tc.checkpoint_dir is not None:
        log.info("checkpoints in %s every %g s", tc.checkpoint_dir, tc.checkpoint_every_s)
    arch = {k: v for k, v in p.architecture.items() if k != "seed"}
    cfg = ModelConfig(**arch, vocab_size=tok.get_vocab_size())
    model = build_model(cfg, qat=p.variant in ("qat", "ternary"), seed=p.seed, ternary=p.variant == "ternary")
    history = train(model, train_rows, eval_rows, tc, copy_rows=copy_rows)
    model.cpu()  # trained on tc.device; exported from CPU
    meta = gguf_tokenizer_metadata(tok)
    extra = {"neagari.training.variant": p.variant}
    if "float" in snakemake.output.keys():
        weights = {n: m.weight.detach().float().numpy() for n, m in model.tensor_modules().items()}
        write_model(snakemake.output.float, cfg, weights, meta, name=snakemake.wildcards.model,
                    extra_metadata=extra, quantize=False, float_type=TYPE_F16)
    else:
        write_model(snakemake.output.gguf, cfg, export_weights(model), meta, name=snakemake.wildcards.model,
                    extra_metadata=extra, block_type=block_type(model))
    table = pl.DataFrame(history, schema_overrides={"eval_loss": pl.Float64}).with_columns(
        pl.lit(snakemake.wildcards.model).alias("model"), pl.lit(p.variant).alias("variant"))
    write_table(table, snakemake.output.history, TrainingLoss)
    log.info("final train loss %.3f, eval loss %.3f", history[-1]["train_loss"], history[-1]["eval_loss"])
