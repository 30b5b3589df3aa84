"""WriteFlow: a writer waits while the transport is paused, and is released (or failed) when it goes."""

from __future__ import annotations

import asyncio

import pytest

from bastion.server.flow import WriteFlow


async def test_wait_returns_at_once_unless_paused_then_on_resume():
    flow = WriteFlow(asyncio.get_running_loop())
    await flow.wait()
    flow.pause()
    waiter = asyncio.ensure_future(flow.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    flow.resume()
    await waiter
    assert not flow.paused


@pytest.mark.parametrize("error", [None, ConnectionResetError("gone")])
async def test_release_lets_a_waiting_writer_go_or_fails_it(error):
    flow = WriteFlow(asyncio.get_running_loop())
    flow.pause()
    waiter = asyncio.ensure_future(flow.wait())
    await asyncio.sleep(0)
    flow.release(error)
    if error is None:
        await waiter
    else:
        with pytest.raises(ConnectionResetError):
            await waiter
