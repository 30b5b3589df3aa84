from collections.abc import Iterator

import pytest

from tests.state.redis_server import RedisServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, for one test."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
