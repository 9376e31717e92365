"""Storage backends: :mod:`.redis` (shared by every worker, atomic Lua) and :mod:`.memory`
(one process, for unit tests). Both apply the same rules, documented in
:mod:`workers.ratelimit`, to any :class:`~workers.ratelimit.model.Algorithm`."""

from workers.ratelimit.backends.memory import MemoryBackend
from workers.ratelimit.backends.redis import RedisBackend

__all__ = ["MemoryBackend", "RedisBackend"]
