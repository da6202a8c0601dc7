from __future__ import annotations

from typing import Iterator

import pytest

from tests.http_server import LocalServer


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A local HTTP server on 127.0.0.1; set `http_server.routes[path] = ...` to serve files."""
    # A proxy configured in the environment must not intercept requests to the local server.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with LocalServer() as server:
        yield server
