"""A Redis DB of its own for a bench run, claimed as the test suite claims its DBs
(``tests/conftest.py``: a lock key set if absent, then the rest of the DB flushed), so that
neither a test run nor another bench flushes it or runs its jobs meanwhile. Not 11 or 12:
``bench.run`` flushes those unasked."""

from __future__ import annotations

import os

import redis

LOCK_KEY = "courier-test:db-lock"
DBS = (*range(1, 11), 13, 14, 15)


def claim_db_number(host: str = "127.0.0.1", port: int = 6379) -> int:
    for db in DBS:
        client = redis.Redis(host=host, port=port, db=db)
        try:
            if client.set(LOCK_KEY, os.getpid(), nx=True, ex=3600):
                for key in client.scan_iter(count=1000):
                    if key != LOCK_KEY.encode():
                        client.delete(key)
                return db
        finally:
            client.close()
    raise RuntimeError(f"no free Redis DB for the bench ({DBS} all claimed)")


def claim_db(host: str = "127.0.0.1", port: int = 6379) -> str:
    """The URL of a DB claimed for this run."""
    return f"redis://{host}:{port}/{claim_db_number(host, port)}"


def release_db(url: str) -> None:
    client = redis.Redis.from_url(url)
    client.flushdb()  # the lock goes with it
    client.close()
