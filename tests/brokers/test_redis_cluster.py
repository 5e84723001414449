"""The counters on a Redis Cluster (METER_REDIS_CLUSTER, REDIS_URL = one node): three masters
started here, customers spread over their slots, every counter written and read exactly."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from pricing.errors import ConfigError
from storage import db as storage_db
from storage.embedded import broker_url
from storage.redis_client import get_redis, reset_redis
from storage.settings import reset_settings
from tasks.ingest import ingest_events
from tests.conftest import SessionServers
from tests.faults.servers import RedisClusterServers
from tests.metering.helpers import assert_consistent, batch, event, setup_customer

CUSTOMERS = [f"cus_{i}" for i in range(12)]


@pytest.fixture
def cluster(
    clean_state: None,
    test_servers: SessionServers,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[RedisClusterServers]:
    servers = RedisClusterServers(tmp_path)
    servers.start()
    monkeypatch.setenv("BROKER_URL", test_servers.redis_url)  # the session's single Redis
    monkeypatch.setenv("REDIS_URL", servers.url)
    monkeypatch.setenv("METER_REDIS_CLUSTER", "true")
    reset_settings()
    reset_redis()
    storage_db.clear_caches()
    try:
        yield servers
    finally:
        reset_redis()
        servers.stop()
        monkeypatch.undo()
        reset_settings()
        reset_redis()


def test_counters_are_exact_on_a_three_master_cluster(cluster: RedisClusterServers) -> None:
    assert isinstance(get_redis(), RedisCluster)
    for customer_id in CUSTOMERS:
        setup_customer(customer_id)
    for round_ in range(3):  # several batches per customer: the versioned counter protocol
        for n, customer_id in enumerate(CUSTOMERS):
            events = [
                event("api_calls", n + 1, customer_id=customer_id),
                event("storage", 10 + round_, customer_id=customer_id),
                event("login", customer_id=customer_id, properties={"user_id": f"u{round_}"}),
                event("api_calls", "0.5", customer_id=customer_id, properties={"region": "eu"}),
            ]
            ingest_events(batch(events))
    for n, customer_id in enumerate(CUSTOMERS):
        quantities = assert_consistent(customer_id, require_live=True)  # read from the cluster
        assert quantities["api_calls"] == 3 * (n + 1) + 3 * Decimal("0.5")
        assert quantities["seats"] == 3 and quantities["peak_gb"] == 12

    holding = 0
    for node in cluster.nodes:  # the customers' keys are spread over the masters
        client = redis.Redis.from_url(node.url)
        holding += int(client.dbsize() > 0)
        client.close()
    assert holding == 3


def test_a_cluster_without_a_broker_url_is_refused(
    test_servers: SessionServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METER_REDIS_CLUSTER", "true")
    monkeypatch.delenv("BROKER_URL", raising=False)
    reset_settings()
    try:
        with pytest.raises(ConfigError, match="BROKER_URL: required with METER_REDIS_CLUSTER"):
            broker_url()
    finally:
        monkeypatch.undo()
        reset_settings()
