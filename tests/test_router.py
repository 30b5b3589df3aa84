from __future__ import annotations

import pytest

from bastion.router import AmbiguousPath, Router, split_request_path


def test_static_beats_parameter_and_params_are_captured():
    router = Router()
    router.add([], "/orders/{id}", "GET", "by-id")
    router.add([], "/orders/latest", "GET", "latest")
    router.add(["api.example.com"], "/orders/{id}", "DELETE", "host-only")
    assert router.match(None, ["orders", "latest"]) == ({"GET": "latest"}, {})
    assert router.match(None, ["orders", "42"]) == ({"GET": "by-id"}, {"id": "42"})
    assert router.match("api.example.com", ["orders", "42"])[0] == {"DELETE": "host-only"}
    assert router.match(None, ["orders"])[0] is None
    assert router.match(None, ["orders", "1", "x"])[0] is None


def test_clash_is_reported():
    router = Router()
    assert router.add([], "/a/{x}", "GET", "one") is None
    assert router.add([], "/a/{y}", "GET", "two") == "one"


@pytest.mark.parametrize("path", ["/a/../b", "/a/%2e%2e/b", "/a%2fb", "/a%5cb", "/a\\b", "/%00", "/a/%252e", "/a%zz",
                                  "/shop/%E4s83%AC"])  # the last found by fuzz/http.py: not UTF-8
def test_ambiguous_paths(path):
    with pytest.raises(AmbiguousPath):
        split_request_path(path)


def test_decoding():
    assert split_request_path("/caf%C3%A9//x/") == ["café", "x"]
