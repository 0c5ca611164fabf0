"""The engine: Q1_0 format, GGUF reading and writing, the Qwen3 model, tokenizer, loading, scoring
and generation, fixture models. Imports only hashing (and the standard scientific stack)."""
