"""Prompt of musr_generative.yaml: the harness's leaderboard MuSR text and an answer-format line."""

import ast

INSTRUCTION = "Answer with the number of the correct option."


def choices(doc):
    value = doc["choices"]
    return list(ast.literal_eval(value) if isinstance(value, str) else value)


def doc_to_text(doc):
    options = "".join(f"{i + 1} - {c}\n" for i, c in enumerate(choices(doc)))
    return f"{doc['narrative']}\n\n{doc['question']}\n\n{options}\n{INSTRUCTION}\nAnswer:"
