"""Leader election: one PostgreSQL advisory lock, exactly one leader, hand-over on loss."""

from __future__ import annotations

from collections.abc import Callable

from storage.leader_lock import SCHEDULER_LOCK, LeaderElection, lock_key
from tests.conftest import SessionServers
from tests.scheduler.conftest import terminate_backend

Contender = Callable[[], LeaderElection]


def test_of_two_contenders_exactly_one_leads(contender: Contender) -> None:
    first, second = contender(), contender()
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.is_leader and not second.is_leader
    # Asking again changes nothing: the leader stays leader, the standby stays standby.
    assert first.try_acquire() is True
    assert second.try_acquire() is False
    assert first.check() is True
    assert second.check() is False


def test_a_released_lock_goes_to_the_standby(contender: Contender) -> None:
    first, second = contender(), contender()
    assert first.try_acquire()
    first.release()
    assert not first.is_leader
    assert second.try_acquire() is True
    assert first.try_acquire() is False


def test_losing_the_session_loses_leadership_and_the_standby_takes_over(
    contender: Contender, test_servers: SessionServers
) -> None:
    leader, standby = contender(), contender()
    assert leader.try_acquire()
    assert not standby.try_acquire()
    terminate_backend(test_servers.database_url, leader.backend_pid)
    assert leader.check() is False  # the leader notices at its next check
    assert not leader.is_leader
    assert standby.try_acquire() is True
    # Back on standby, the old leader reconnects and waits like any other contender.
    assert leader.try_acquire() is False


def test_an_unreachable_database_means_standby_not_a_crash(contender: Contender) -> None:
    unreachable = LeaderElection("postgresql://postgres@127.0.0.1:1/postgres", key=1)
    assert unreachable.try_acquire() is False
    assert unreachable.check() is False
    unreachable.release()


def test_lock_keys_are_stable_signed_64_bit_integers() -> None:
    assert lock_key("meterline:scheduler") == SCHEDULER_LOCK
    assert -(2**63) <= SCHEDULER_LOCK < 2**63
    assert lock_key("a") != lock_key("b")
