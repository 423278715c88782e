"""The shipped price table: list prices of common API models, USD per million tokens (prompt, completion).

Taken by hand from the providers' public pricing pages in PRICES_AS_OF and not re-checked since: prices change,
so check your provider's page before trusting an estimate, and correct or extend the table under `prices:` in a
run config (a config's entries are added to these, and win). Batch, cached-input and long-context rates are not
modelled: every prompt token is billed at the standard input rate.
"""

from __future__ import annotations

PRICES_AS_OF = "2025-08"

LIST_PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3": (2.00, 8.00),
    "o4-mini": (1.10, 4.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    # Google (prompts up to 200k tokens)
    "gemini-2.5-pro": (1.25, 10.00),
    "gemini-2.5-flash": (0.30, 2.50),
    # Anthropic (through an OpenAI-compatible endpoint)
    "claude-sonnet-4-0": (3.00, 15.00),
    "claude-opus-4-1": (15.00, 75.00),
    "claude-3-5-haiku-latest": (0.80, 4.00),
}
