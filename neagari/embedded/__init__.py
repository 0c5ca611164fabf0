"""The embedded model: its procedural corpus and probe sets (toydata) and its training (QAT and full
precision). Imports engine, workflow and the shared helpers only."""
