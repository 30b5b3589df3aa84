"""The probe's HTTP client: a large body waits for `100 Continue`, so a refusal by declared length is read."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bastion.posture.client import Target, send
from tests.helpers import running_gateway

LIMITED = """
version: 1
gateway:
  listeners: [{address: 127.0.0.1, port: 0}]
classes:
  open:
    identity: {required: false}
    traffic: {max_body_bytes: 32KiB}
    input: {inspection: off}
apis:
  - name: shop
    owner: team-shop@example.com
    class: open
    upstream: {upstream}
    routes:
      - {name: items, path: /items, methods: [POST]}
"""


async def test_an_oversized_body_is_refused_by_its_length_every_time(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, LIMITED) as gw:
        target = Target("http", "127.0.0.1", gw.bound[0][1])
        big = b"x" * (4 * 1024 * 1024)  # far past the limit: sent blindly, the reset could eat the 413
        answers = await asyncio.gather(*(send(target, "POST", "/items", [("Content-Type", "text/plain")], big)
                                         for _ in range(20)))
        assert [a.status for a in answers] == [413] * 20
        fits = await send(target, "POST", "/items", [("Content-Type", "text/plain")], b"y" * 20_000)
        assert fits.status == 200 and b'"body_bytes":20000' in fits.body.replace(b" ", b"")  # 100 Continue, body
