"""Fixtures of the fault tests: each scheduler test on a lock key of its own."""

from tests.scheduler.conftest import election_key

__all__ = ["election_key"]
