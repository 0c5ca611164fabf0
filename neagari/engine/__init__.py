"""The engine: the Q1_0 and Q2_0 block formats, GGUF reading and writing, the Qwen3 model, tokenizer, loading, scoring
and generation, fixture models. Imports only hashing (and the standard scientific stack)."""
