"""Evaluating models: held-out verbatim outcomes, the quality report, benchmark items and scorers,
llama.cpp generation and its agreement rule. Imports engine, workflow and the shared helpers only."""
