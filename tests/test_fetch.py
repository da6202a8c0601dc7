from __future__ import annotations

import gzip
import os
import time

import pytest

from pipeline.errors import PipelineError
from pipeline.fetch import FetchError, download_file, gzip_integrity
from tests.http_server import Route, closed_port_url

DATA = os.urandom(200_000)  # several read chunks, so progress and limits are exercised


def test_downloads_file_and_leaves_no_part(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    dest = download_file(http_server.url("/f.bin"), tmp_path / "sub" / "f.bin", progress=False)
    assert dest.read_bytes() == DATA
    assert not (tmp_path / "sub" / "f.bin.part").exists()


def test_existing_file_is_not_refetched(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    dest = tmp_path / "f.bin"
    download_file(http_server.url("/f.bin"), dest, progress=False)
    download_file(http_server.url("/f.bin"), dest, progress=False)
    assert http_server.counts["/f.bin"] == 1


def test_existing_file_failing_verify_is_refetched(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"stale")
    ok_if_full = lambda p: None if p.stat().st_size == len(DATA) else "short"  # noqa: E731
    download_file(http_server.url("/f.bin"), dest, progress=False, verify=ok_if_full)
    assert dest.read_bytes() == DATA
    assert http_server.counts["/f.bin"] == 1


def test_resumes_partial_download_with_range(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    dest = tmp_path / "f.bin"
    (tmp_path / "f.bin.part").write_bytes(DATA[:12_345])
    download_file(http_server.url("/f.bin"), dest, progress=False)
    assert http_server.ranges_seen("/f.bin") == ["bytes=12345-"]
    assert dest.read_bytes() == DATA


def test_restarts_when_server_ignores_range(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(DATA, ranges=False)
    (tmp_path / "f.bin.part").write_bytes(b"x" * 1000)
    dest = download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == DATA


def test_complete_part_answered_416_is_kept(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    (tmp_path / "f.bin.part").write_bytes(DATA)
    dest = download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == DATA
    assert http_server.counts["/f.bin"] == 1


def test_oversized_stale_part_starts_over(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA[:1000]
    (tmp_path / "f.bin.part").write_bytes(b"y" * 5000)
    dest = download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False)
    assert dest.read_bytes() == DATA[:1000]


def test_dropped_connection_is_resumed_on_retry(http_server, tmp_path):
    http_server.routes["/f.bin"] = [Route(DATA, truncate=50_000), Route(DATA)]
    dest = download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False, backoff=0.01)
    assert dest.read_bytes() == DATA
    assert http_server.ranges_seen("/f.bin") == ["bytes=50000-"]


def test_server_error_is_retried(http_server, tmp_path):
    http_server.routes["/f.bin"] = [Route(b"busy", status=503), Route(DATA)]
    dest = download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False, backoff=0.01)
    assert dest.read_bytes() == DATA
    assert http_server.counts["/f.bin"] == 2


def test_persistent_server_error_gives_up_and_keeps_nothing_half_done(http_server, tmp_path):
    http_server.routes["/f.bin"] = Route(b"busy", status=500)
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False, retries=2, backoff=0.01)
    assert info.value.status == 500 and info.value.kind == "http_error"
    assert http_server.counts["/f.bin"] == 3
    assert "3 attempts" in str(info.value)
    assert not (tmp_path / "f.bin").exists()


def test_404_is_not_retried(http_server, tmp_path):
    url = http_server.url("/missing.bin")
    with pytest.raises(FetchError) as info:
        download_file(url, tmp_path / "m.bin", progress=False, retries=3, backoff=0.01)
    err = info.value
    assert isinstance(err, PipelineError)
    assert err.status == 404 and err.kind == "http_error"
    assert http_server.counts["/missing.bin"] == 1
    assert url in str(err) and "404" in str(err) and "\n" not in str(err)
    assert not (tmp_path / "m.bin").exists() and not (tmp_path / "m.bin.part").exists()


def test_slow_response_times_out(http_server, tmp_path):
    http_server.routes["/slow"] = Route(b"late", delay=2.0)
    start = time.monotonic()
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/slow"), tmp_path / "s", progress=False, timeout=0.6, retries=1, backoff=0.01)
    assert info.value.kind == "timeout" and info.value.status is None
    assert "timed out" in str(info.value)
    assert http_server.counts["/slow"] == 2
    assert time.monotonic() - start < 3.0  # two 0.6 s attempts, not two 2 s waits


def test_connection_refused_hints_offline(tmp_path):
    url = closed_port_url("/f.bin")
    with pytest.raises(FetchError) as info:
        download_file(url, tmp_path / "f.bin", progress=False, retries=1, backoff=0.01)
    err = info.value
    assert err.kind == "connection" and err.status is None
    assert "offline? no network access" in str(err) and url in str(err)


@pytest.mark.parametrize("url", ["ftp://example.org/f.gz", "file:///etc/passwd", "example.org/f.gz"])
def test_only_http_and_https_are_allowed(url, tmp_path):
    with pytest.raises(FetchError) as info:
        download_file(url, tmp_path / "f", progress=False)
    assert info.value.kind == "bad_scheme"
    assert not (tmp_path / "f").exists()


def test_redirect_to_other_scheme_is_refused(http_server, tmp_path):
    http_server.routes["/r"] = Route(status=302, headers={"Location": "ftp://example.org/f"})
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/r"), tmp_path / "f", progress=False)
    assert info.value.kind == "bad_scheme"


def test_max_bytes_from_content_length(http_server, tmp_path):
    http_server.routes["/big"] = DATA
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/big"), tmp_path / "big", progress=False, max_bytes=10_000)
    assert info.value.kind == "too_large"
    assert not (tmp_path / "big").exists() and not (tmp_path / "big.part").exists()


def test_max_bytes_while_streaming_without_content_length(http_server, tmp_path, monkeypatch):
    # A server may omit or understate the length; the limit must hold on the bytes received.
    import pipeline.fetch as fetch

    monkeypatch.setattr(fetch, "_content_length", lambda headers: None)
    http_server.routes["/big"] = DATA
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/big"), tmp_path / "big", progress=False, max_bytes=100_000)
    assert info.value.kind == "too_large"
    assert not (tmp_path / "big.part").exists()


def test_verify_failure_deletes_download(http_server, tmp_path):
    http_server.routes["/f.bin"] = DATA
    with pytest.raises(FetchError) as info:
        download_file(http_server.url("/f.bin"), tmp_path / "f.bin", progress=False, verify=lambda p: "bad_stuff")
    assert info.value.kind == "invalid_content" and info.value.detail == "bad_stuff"
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_gzip_integrity(tmp_path):
    good = tmp_path / "good.json.gz"
    good.write_bytes(gzip.compress(b'{"a": 1}\n' * 10_000))
    assert gzip_integrity(good) is None

    truncated = tmp_path / "trunc.json.gz"
    truncated.write_bytes(good.read_bytes()[:-20])
    assert "corrupt gzip" in gzip_integrity(truncated)

    flipped = bytearray(good.read_bytes())
    flipped[-6] ^= 0xFF  # inside the CRC32/length trailer
    bad_crc = tmp_path / "crc.json.gz"
    bad_crc.write_bytes(bytes(flipped))
    assert "corrupt gzip" in gzip_integrity(bad_crc)

    html = tmp_path / "page.json.gz"
    html.write_bytes(b"<html>rate limited</html>")
    assert gzip_integrity(html) == "not a gzip file"

    plain = tmp_path / "plain.json"
    plain.write_bytes(b"{}")
    assert gzip_integrity(plain) is None
