"""Robust HTTP downloads: resumable, retried, size-capped, verified, and atomic.

A download goes to `<dest>.part` and is renamed onto `dest` only once it is complete and
verified, so an existing `dest` is always a good file and an interrupted run resumes from
the `.part` with an HTTP Range request instead of starting over.
"""
from __future__ import annotations

import gzip
import http.client
import os
import re
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from tqdm import tqdm

from pipeline.errors import PipelineError

SCHEMES = ("http", "https")
CHUNK_BYTES = 1 << 16
USER_AGENT = "mgr-pipeline/0.1 (+urllib)"
GZIP_MAGIC = b"\x1f\x8b"
# Retry-After can ask for any wait; past this we would rather fail and let the user rerun.
MAX_RETRY_AFTER_S = 30.0

Verify = Callable[[Path], "str | None"]


class FetchError(PipelineError):
    """A download that failed for good (after retries, where retrying made sense).

    `kind` is one of: http_error, timeout, connection, too_large, bad_scheme, bad_url,
    invalid_content. `status` is the HTTP status, None when no response came back.
    `detail` carries the verify() problem for invalid_content.
    """

    def __init__(
        self,
        url: str,
        problem: str,
        *,
        kind: str,
        status: int | None = None,
        retryable: bool = False,
        offline: bool = False,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(url, problem)
        self.url = url
        self.problem = problem
        self.kind = kind
        self.status = status
        self.retryable = retryable
        self.offline = offline
        self.detail = detail
        self.retry_after = retry_after
        self.attempts = 1

    def __str__(self) -> str:
        msg = f"could not download {self.url}: {self.problem}"
        if self.attempts > 1:
            msg += f" (gave up after {self.attempts} attempts)"
        if self.offline:
            msg += " (offline? no network access)"
        return msg


def download_file(
    url: str,
    dest: Path,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    backoff: float = 1.0,
    max_bytes: int | None = None,
    progress: bool = True,
    verify: Verify | None = None,
) -> Path:
    """Download `url` to `dest` unless a good `dest` is already there; return `dest`.

    `retries` is how many more attempts follow a transient failure (timeout, connection
    error, 5xx, 429), waiting `backoff * 2**n` seconds between them. `verify(path)`
    returns None for a good file or a problem string; it gates both an existing `dest`
    (a bad one is refetched) and a fresh download (a bad one is deleted, FetchError).
    """
    dest = Path(dest)
    _check_scheme(url)
    if dest.exists():
        if verify is None or verify(dest) is None:
            return dest
        dest.unlink()
    part = dest.with_name(dest.name + ".part")

    attempts = max(0, retries) + 1
    for attempt in range(1, attempts + 1):
        try:
            _fetch_into(url, part, timeout=timeout, max_bytes=max_bytes, progress=progress, label=dest.name)
            break
        except FetchError as err:
            err.attempts = attempt
            if not err.retryable:
                # Nothing worth resuming: a 404 or an oversized or invalid body.
                part.unlink(missing_ok=True)
                raise
            if attempt == attempts:
                raise  # the .part stays, so the next run resumes it
            wait = backoff * 2 ** (attempt - 1)
            if err.retry_after is not None:
                wait = max(wait, min(err.retry_after, MAX_RETRY_AFTER_S))
            time.sleep(wait)

    if verify is not None:
        problem = verify(part)
        if problem is not None:
            part.unlink(missing_ok=True)
            raise FetchError(
                url, f"downloaded file failed its check and was deleted: {problem}",
                kind="invalid_content", detail=problem,
            )
    os.replace(part, dest)
    return dest


def gzip_integrity(path: Path) -> str | None:
    """None if `path` is not gzip or is a complete, valid gzip stream; else the problem.

    Decompressing the whole stream is the only way to check it: Python's gzip verifies
    each member's CRC32 and length at its end, and reports a truncated stream.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(2)
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if magic != GZIP_MAGIC:
        # A `.gz` name without the magic is typically an HTML error page saved to disk.
        if path.name.removesuffix(".part").endswith(".gz"):
            return "not a gzip file"
        return None
    try:
        with gzip.open(path, "rb") as f:
            while f.read(1 << 20):
                pass
    except (OSError, EOFError, zlib.error) as err:
        return f"corrupt gzip ({err})"
    return None


def _check_scheme(url: str) -> None:
    try:
        scheme = urlsplit(url).scheme.lower()
    except ValueError as err:
        raise FetchError(url, f"malformed URL ({err})", kind="bad_url") from None
    if scheme not in SCHEMES:
        raise FetchError(url, f"unsupported URL scheme {scheme or '(none)'!r}; only http and https are allowed",
                         kind="bad_scheme")


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    # urllib would follow a redirect to ftp://; the scheme rule must hold after redirects too.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[override]
        if urlsplit(newurl).scheme.lower() not in SCHEMES:
            raise FetchError(req.full_url, f"redirected to a non-http(s) URL {newurl}", kind="bad_scheme")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _open(url: str, offset: int, timeout: float) -> http.client.HTTPResponse | urllib.error.HTTPError:
    """Send the request; every failure becomes a FetchError, except a 416 to a Range request,
    which is returned so the caller can look at its Content-Range."""
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = urllib.request.Request(url, headers=headers)
    # Built per call so proxy settings from the environment are read when they apply.
    opener = urllib.request.build_opener(_HttpOnlyRedirects)
    try:
        return opener.open(req, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return err
        err.close()
        raise FetchError(
            url, f"HTTP {err.code} {err.reason}".rstrip(), kind="http_error", status=err.code,
            retryable=err.code >= 500 or err.code in (408, 429),
            retry_after=_retry_after(err.headers),
        ) from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise _timeout(url, timeout) from None
        reason = getattr(err.reason, "strerror", None) or str(err.reason)
        raise FetchError(url, f"connection failed ({reason})", kind="connection",
                         retryable=True, offline=True) from None
    except TimeoutError:
        raise _timeout(url, timeout) from None
    except (http.client.HTTPException, ConnectionError) as err:
        raise _dropped(url, err) from None
    except ValueError as err:  # http.client.InvalidURL, non-ASCII in the request line
        raise FetchError(url, f"malformed URL ({err})", kind="bad_url") from None


def _fetch_into(url: str, part: Path, *, timeout: float, max_bytes: int | None, progress: bool, label: str) -> None:
    """One attempt: fetch the missing bytes of `url` into `part`, appending to what it holds."""
    offset = part.stat().st_size if part.exists() else 0
    resp = _open(url, offset, timeout)
    if resp.status == 416:
        # Our Range starts at or past the end: the part is either complete or stale.
        resp.close()
        if _content_range(resp.headers)[2] == offset:
            return
        part.unlink()
        offset = 0
        resp = _open(url, 0, timeout)

    with resp:
        if resp.status == 206:
            start, _, total = _content_range(resp.headers)
            if start != offset:
                part.unlink(missing_ok=True)
                raise FetchError(url, f"server resumed at byte {start}, asked for {offset}",
                                 kind="invalid_content", retryable=True)
            length = _content_length(resp.headers)
            if total is None and length is not None:
                total = offset + length
            mode = "ab"
        else:  # 200: the server ignored our Range (or there was none), so start from zero
            offset = 0
            total = _content_length(resp.headers)
            mode = "wb"
        if max_bytes is not None and total is not None and total > max_bytes:
            raise _too_large(url, max_bytes, total)

        size = offset
        part.parent.mkdir(parents=True, exist_ok=True)
        with open(part, mode) as f, tqdm(
            total=total, initial=offset, desc=label, unit="B", unit_scale=True, unit_divisor=1024,
            disable=None if progress else True, leave=False,
        ) as bar:
            while chunk := _read(resp, url, timeout):
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise _too_large(url, max_bytes, None)
                f.write(chunk)
                bar.update(len(chunk))

    if total is not None and size < total:
        # The connection closed early; the bytes we have are kept and the retry resumes.
        raise FetchError(url, f"connection closed after {size} of {total} bytes", kind="connection", retryable=True)
    if total is not None and size > total:
        raise FetchError(url, f"got {size} bytes, server announced {total}", kind="invalid_content")


def _read(resp: http.client.HTTPResponse, url: str, timeout: float) -> bytes:
    # Only network errors are translated here; a failed write to disk must stay an OSError.
    try:
        return resp.read(CHUNK_BYTES)
    except TimeoutError:
        raise _timeout(url, timeout) from None
    except (http.client.HTTPException, ConnectionError) as err:
        raise _dropped(url, err) from None


def _timeout(url: str, timeout: float) -> FetchError:
    return FetchError(url, f"timed out after {timeout:g} s", kind="timeout", retryable=True)


def _dropped(url: str, err: Exception) -> FetchError:
    return FetchError(url, f"connection dropped ({type(err).__name__}: {err})".replace("\n", " "),
                      kind="connection", retryable=True)


def _too_large(url: str, max_bytes: int, total: int | None) -> FetchError:
    size = f"{total} bytes" if total is not None else "more"
    return FetchError(url, f"file too large ({size}; limit {max_bytes} bytes)", kind="too_large")


def _content_length(headers) -> int | None:
    value = headers.get("Content-Length")
    return int(value) if value and value.strip().isdigit() else None


_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")


def _content_range(headers) -> tuple[int | None, int | None, int | None]:
    """(first byte, last byte, total) from Content-Range; None for each part that is absent."""
    m = _CONTENT_RANGE.match(headers.get("Content-Range", "").strip())
    if not m:
        return None, None, None
    first, last, total = m.groups()
    return (
        int(first) if first else None,
        int(last) if last else None,
        int(total) if total and total != "*" else None,
    )


def _retry_after(headers) -> float | None:
    value = (headers or {}).get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None
