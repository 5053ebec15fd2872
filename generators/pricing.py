"""Prices per million tokens (USD) for common API models; override per spec with ``price``.

Prices change; this table is a convenience for estimates, not an invoice. Local backends cost 0
unless their spec gives ``price: {per_hour: USD}``: then each answer is charged its measured
compute time (see :meth:`generators.engine.Engine` on what that is).
"""

from __future__ import annotations

from datagen_core.records import Price, Usage

# (input, output) USD per 1M tokens, list prices as published by the providers.
_TABLE: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "o3-mini": (1.10, 4.40),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
}


# The batch APIs (``openai-batch``, ``anthropic-batch``) bill 50% of the list price: OpenAI's
# Batch API guide ("50% cost discount compared to synchronous APIs") and Anthropic's
# batch-processing guide ("reducing costs by 50%").
BATCH_DISCOUNT = 0.5


def price_for(provider: str, model: str) -> Price | None:
    base = provider.removesuffix("-batch")
    if base not in ("openai", "anthropic"):
        return None
    # Longest prefix wins, so dated snapshots ("gpt-4o-2024-08-06") find their family.
    best = max((k for k in _TABLE if model.startswith(k)), key=len, default=None)
    if best is None:
        return None
    i, o = _TABLE[best]
    if base != provider:
        i, o = i * BATCH_DISCOUNT, o * BATCH_DISCOUNT
    return Price(input_per_mtok=i, output_per_mtok=o)


def cost(price: Price | None, usage: Usage, compute_s: float = 0.0) -> float:
    """Token charges plus, for a machine priced by the hour, ``compute_s`` seconds of it."""
    if price is None:
        return 0.0
    return (
        usage.prompt_tokens * price.input_per_mtok + usage.completion_tokens * price.output_per_mtok
    ) / 1e6 + compute_s * price.per_hour / 3600
