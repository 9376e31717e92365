"""Storage backends: :mod:`.redis` (shared by every worker, atomic Lua) and :mod:`.memory`
(one process, for unit tests). Both apply the same rules, documented in
:mod:`core.ratelimit`, to any :class:`~core.ratelimit.model.Algorithm`."""

from core.ratelimit.backends.memory import MemoryBackend
from core.ratelimit.backends.redis import RedisBackend

__all__ = ["MemoryBackend", "RedisBackend"]
