"""The JWT replay check holds across workers and across instances sharing a database."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import yaml
from sqlalchemy.exc import OperationalError

from cds_service.auth import MemoryReplayCache
from cds_service.config import Settings
from cds_service.storage import Store
from cds_service.storage.replay import SqlReplayCache
from tests.conftest import SIGN, hook_request, service_request
from tests.servers import Server
from tests.test_auth import ISS, Key


@pytest.fixture
def two_instances(database_url, tmp_path):
    settings = Settings(database_url=database_url, data_dir=tmp_path / "data", upgrade_db=True)
    return SqlReplayCache(Store.open(settings)), SqlReplayCache(Store.open(settings))


def test_a_jti_is_accepted_once_across_instances(two_instances):
    first, second = two_instances
    expires = time.time() + 300
    assert first.claim(ISS, "jti-1", expires)
    assert not second.claim(ISS, "jti-1", expires)
    assert not first.claim(ISS, "jti-1", expires)
    assert second.claim("https://other.example", "jti-1", expires)  # per issuer
    assert second.claim(ISS, "jti-2", expires)


def test_an_expired_claim_no_longer_blocks(two_instances):
    first, second = two_instances
    assert first.claim(ISS, "old", time.time() - 1)
    assert second.claim(ISS, "old", time.time() + 300)
    assert not first.claim(ISS, "old", time.time() + 300)


def test_a_database_outage_falls_back_to_the_workers_memory(two_instances, monkeypatch, caplog):
    cache, _ = two_instances
    assert cache.claim(ISS, "before", time.time() + 300)

    def down(*_args, **_kwargs):
        raise OperationalError("select 1", {}, Exception("connection refused"))

    monkeypatch.setattr(cache._store, "connect", down)
    assert not cache.claim(ISS, "before", time.time() + 300)  # remembered locally too
    assert cache.claim(ISS, "during", time.time() + 300)
    assert not cache.claim(ISS, "during", time.time() + 300)
    assert "fell back" in caplog.text


def test_memory_cache_forgets_expired_entries():
    now = [1000.0]
    cache = MemoryReplayCache(clock=lambda: now[0])
    for i in range(1000):
        assert cache.claim(ISS, f"j{i}", now[0] + 10)
    assert not cache.claim(ISS, "j5", now[0] + 10)
    now[0] += 11
    assert cache.claim(ISS, "j5", now[0] + 10)
    assert len(cache._seen) == 1


@pytest.mark.e2e
def test_replay_is_refused_across_the_workers_of_a_real_server(tmp_path):
    signer = Key("EC", "e2e-key")
    clients = tmp_path / "clients.yaml"
    clients.write_text(yaml.safe_dump({"clients": [{"iss": ISS, "jwks": {"keys": [signer.jwk]}}]}))
    server = Server(
        tmp_path / "server.log",
        {"CDS_DATA_DIR": str(tmp_path / "data")},
        "--trusted-clients",
        str(clients),
        workers=2,
    )
    try:
        body = json.dumps(hook_request(service_request(code="0600T")))

        def post(token: str) -> int:
            response = requests.post(
                server.url + SIGN,
                data=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                timeout=20,
            )
            return response.status_code

        # Many fresh tokens first, so both workers are known to serve (and warm).
        for _ in range(10):
            assert post(signer.token(aud=server.url + SIGN)) == 200
        for _ in range(5):
            token = signer.token(aud=server.url + SIGN, jti=str(uuid.uuid4()))
            with ThreadPoolExecutor(max_workers=12) as pool:
                statuses = list(pool.map(post, [token] * 24))
            assert statuses.count(200) == 1, statuses
            assert statuses.count(401) == 23
        log = server.output()
        pids = {line.split("pid: ")[1].split(")")[0] for line in log.splitlines() if "Booting worker with pid" in line}
        assert len(pids) == 2
        assert "jti was already used" in log
        assert "fell back" not in log  # the database decided, not each worker's own memory
    finally:
        assert server.stop() == 0
