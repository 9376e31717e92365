"""The seam tests' ``runtime`` fixture (a module may define its own instead)."""

from tests.support.runner_kit import runtime

__all__ = ["runtime"]
