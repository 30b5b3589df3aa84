"""The list form of `upstream` and the `load_balancing` section."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bastion.config.models import ApiConfig
from bastion.upstreams.config import LoadBalancingConfig
from bastion.upstreams.spec import pool_spec


def api(upstream: object, **extra: object) -> ApiConfig:
    return ApiConfig.model_validate({"name": "a", "class": "c", "upstream": upstream, **extra})


def test_one_url_stays_valid_and_is_no_pool() -> None:
    config = api("http://127.0.0.1:9000")
    assert pool_spec(config.upstream, config.load_balancing) is None


def test_list_of_targets() -> None:
    config = api(["http://10.0.0.1:8080", {"url": "http://10.0.0.2:8080", "weight": 3, "zone": "b"}])
    spec = pool_spec(config.upstream, config.load_balancing)
    assert spec is not None
    assert [(t.name, t.weight, t.zone) for t in spec.targets] == [("10.0.0.1:8080", 1, None),
                                                                  ("10.0.0.2:8080", 3, "b")]
    assert spec == pool_spec(config.upstream, None) and hash(spec) == hash(pool_spec(config.upstream, None))
    other = pool_spec(config.upstream, LoadBalancingConfig(policy="least_requests"))
    assert other != spec  # a changed setting is a new pool on reload


@pytest.mark.parametrize(("upstream", "extra"), [
    ([], {}),
    (["http://a:1", "http://a:1"], {}),
    (["http://a:1", "https://b:1"], {}),
    (["http://a:1/v1", "http://b:1/v2"], {}),
    (["ftp://a:1"], {}),
    ([{"url": "http://a:1", "weight": 0}], {}),
    (["http://a:1"], {"load_balancing": {"hash_on": "cookie:x"}}),
    (["http://a:1"], {"load_balancing": {"outlier": {"base_ejection": "10m", "max_ejection": "1m"}}}),
    (["http://a:1"], {"load_balancing": {"health_check": {"path": "healthz"}}}),
    (["http://a:1"], {"load_balancing": {"retry": {"attempts": 9}}}),
])
def test_refused(upstream: object, extra: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        api(upstream, **extra)
