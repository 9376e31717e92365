"""The answer cache: an exact match on tenant, model, kind and request returns an earlier
answer at once (docs/contract.md, Cost, budgets and cache). See :mod:`.answers`."""

from core.cache.answers import AnswerCache, Lookup, cache_digest

__all__ = ["AnswerCache", "Lookup", "cache_digest"]
