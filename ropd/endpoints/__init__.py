"""Endpoints and serving: how ropd talks to a model, wherever it runs.

- `models`: model aliases, packaged GGUF files, weights fingerprints, loading local weights;
- `serve`: local models behind an OpenAI-compatible server (llama.cpp or vLLM on loopback), and the cache identity of
  what ropd serves (`local_identity`);
- `transport`, `llm`, `cache`: the OpenAI-compatible client in three layers (transport: SDK, retries, limits, usage;
  structured output; cached sampling, `LLMClient`) and the durable SQLite cache of results.
"""

__all__ = ["cache", "llm", "models", "serve", "transport"]
