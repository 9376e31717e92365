"""Two fixes for a gevent worker: cheap "is this idle socket readable?" checks, and no
blocking sleep in kombu's reconnect loop.

httpcore (under the SDKs) asks, on every request, whether each idle pooled connection is
readable (a server that closed it), and redis-py asks the same of a pooled connection before
lending it. Both ask ``select.poll()`` with a zero timeout. Under gevent's monkey-patching that
is gevent's cooperative ``poll``, which builds and starts a watcher per socket and runs the
hub: a large share of a busy worker's CPU (found with ``python -m bench.run --profile``; the
figure is in the README, Worker model). A zero-timeout poll never blocks, so here those two
checks use the operating system's own ``poll``; every blocking wait stays gevent's.

Celery imports its gevent pool, and with it ``kombu.utils.functional``, before it
monkey-patches, so that module's ``from time import sleep`` is the blocking one: while the
consumer waited between broker reconnects (``retry_over_time``: 2 s, 4 s, … in a Redis outage
or failover), the whole process stood still — calls in flight, lease renewals, endings, the
intake (found in tests/system/test_failover.py: endings 4 s late after a failover). Such
modules get gevent's sleep here.
"""

from __future__ import annotations

import select
import sys
from typing import Any


def _real_poll() -> Any:
    from gevent import monkey

    return monkey.get_original("select", "poll")


def install() -> None:
    """Under gevent's patched ``select``, give httpcore and redis-py the real zero-timeout
    poll; otherwise do nothing."""
    if "gevent" not in sys.modules:
        return
    from gevent import monkey

    if monkey.is_module_patched("time"):
        _cooperative_sleeps()
    if not monkey.is_module_patched("select"):
        return
    real_poll = _real_poll()

    def readable_now(sock: Any) -> bool:
        poller = real_poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))

    import httpcore2._backends.sync
    import httpcore2._utils
    from redis._parsers import hiredis

    def is_socket_readable(sock: Any) -> bool:
        fd = None if sock is None else sock.fileno()
        return True if fd is None or fd < 0 else readable_now(fd)

    # The sync backend (the SDKs' sync clients) imported the function by name.
    httpcore2._utils.is_socket_readable = is_socket_readable
    setattr(httpcore2._backends.sync, "is_socket_readable", is_socket_readable)  # noqa: B010

    gevent_can_read = hiredis._socket_can_read

    def socket_can_read(sock: Any, timeout: float) -> bool:
        if timeout != 0:  # a real wait: it must yield to other greenlets
            return bool(gevent_can_read(sock, timeout))
        if hasattr(sock, "pending") and sock.pending():
            return True
        return readable_now(sock)

    hiredis._socket_can_read = socket_can_read


def _cooperative_sleeps() -> None:
    """kombu's and Celery's modules imported before the monkey-patching sleep with gevent."""
    import time

    from gevent import monkey

    blocking = monkey.get_original("time", "sleep")
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("kombu", "celery") and getattr(module, "sleep", None) is blocking:
            setattr(module, "sleep", time.sleep)  # noqa: B010 (gevent's sleep, after patching)
