"""Rule use_shipped_model: a model kept in the repository, checked (neagari/workflow/shipped.py: the
GGUF against the config's sha256, the record against the GGUF, the loss table against its schema)
and copied to where the workflow's trained models go."""
import shutil

from neagari.embedded.schemas import TrainingLoss
from neagari.tables import read_table
from neagari.workflow.shipped import RETRAIN, ShippedModelError, read_record, verify_shipped
from neagari.workflow.smk import rule_context

p, i, o = snakemake.params, snakemake.input, snakemake.output
with rule_context(snakemake, config_keys=["models"]) as log:
    verify_shipped(i.gguf, p.sha256, p.record, p.key)
    trained_as = read_record(p.record, p.key).get("variant")
    if trained_as != p.variant:
        raise ShippedModelError(f"{i.record}: a {trained_as} model, but config "
                                f"models.{snakemake.wildcards.model}.variant is {p.variant}")
    try:
        history = TrainingLoss.validate(read_table(i.history))
    except Exception as e:  # an unreadable table, or pandera's report (its first line says what failed)
        raise ShippedModelError(f"{i.history}: not a training-loss table ({type(e).__name__}: "
                                f"{(str(e).strip().splitlines() or [''])[0]}); {RETRAIN}") from None
    variants = sorted(set(history["variant"].to_list()))
    if variants != [p.variant]:
        raise ShippedModelError(f"{i.history}: the training loss of a {'/'.join(variants)} model, but config "
                                f"models.{snakemake.wildcards.model}.variant is {p.variant}")
    shutil.copyfile(i.gguf, o.gguf)
    shutil.copyfile(i.history, o.history)
    log.info("%s: sha256 %s as pinned; %d training steps", i.gguf, p.sha256, history.height)
