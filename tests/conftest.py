from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests.http_server import LocalServer
from tests.tiny_models import make_tiny_bert, register_tiny_clip


@pytest.fixture
def http_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalServer]:
    """A local HTTP server on 127.0.0.1; set `http_server.routes[path] = ...` to serve files."""
    # A proxy configured in the environment must not intercept requests to the local server.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with LocalServer() as server:
        yield server


# Tiny encoders (tests/tiny_models.py), built once per test module.

@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> Path:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> str:
    return register_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models: one thread is faster (far faster when another process shares the cores),
    and results compare bit for bit. Modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
