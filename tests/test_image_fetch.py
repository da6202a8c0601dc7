from __future__ import annotations

import io

from PIL import Image

from pipeline.image_fetch import fetch_images, image_extension
from pipeline.images import verify_image
from tests.http_server import Route, closed_port_url


def _image(fmt: str, color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, format=fmt)
    return buf.getvalue()


JPEG = _image("JPEG", (200, 30, 30))
PNG = _image("PNG", (30, 200, 30))


def test_fetch_images_counts_every_item_once(http_server, tmp_path):
    http_server.routes.update({
        "/img/a.jpg": Route(JPEG, content_type="image/jpeg"),
        "/img/b.png": Route(PNG, content_type="image/png"),
        "/img/c": Route(JPEG, content_type="image/jpeg"),  # no extension: cached as .jpg
        "/img/slow.jpg": Route(JPEG, delay=2.0),
        "/img/page.jpg": Route(b"<html>not an image</html>", content_type="text/html"),
    })
    u = http_server.url
    urls = {
        "A1": u("/img/a.jpg"),
        "B2": u("/img/b.png"),
        "C3": u("/img/c"),
        "GONE": u("/img/missing.jpg"),
        "SLOW": u("/img/slow.jpg"),
        "HTML": u("/img/page.jpg"),
        "../evil": u("/img/a.jpg"),
        "NOURL": None,
        "EMPTY": "",
        "FTP": "ftp://example.org/a.jpg",
        "REFUSED": closed_port_url("/a.jpg"),
    }
    cache = tmp_path / "images"
    fetched, problems = fetch_images(urls, cache, workers=4, timeout=0.6, retries=0, progress=False)

    assert fetched == {"A1": cache / "A1.jpg", "B2": cache / "B2.png", "C3": cache / "C3.jpg"}
    assert all(verify_image(p) is None for p in fetched.values())
    assert dict(problems) == {
        "image_http_error": 1,
        "image_timeout": 1,
        "image_undecodable": 1,
        "image_unsafe_id": 1,
        "image_no_url": 2,
        "image_bad_url": 1,
        "image_connection": 1,
    }
    assert len(fetched) + sum(problems.values()) == len(urls)
    assert http_server.counts["/img/missing.jpg"] == 1
    # Nothing escaped the cache, and nothing invalid or partial was left in it.
    assert not (tmp_path / "evil.jpg").exists()
    assert sorted(p.name for p in cache.iterdir()) == ["A1.jpg", "B2.png", "C3.jpg"]


def test_second_run_does_not_refetch_valid_cache(http_server, tmp_path):
    http_server.routes["/a.jpg"] = JPEG
    http_server.routes["/b.png"] = PNG
    urls = {"A": http_server.url("/a.jpg"), "B": http_server.url("/b.png")}
    cache = tmp_path / "images"
    first, _ = fetch_images(urls, cache, workers=2, progress=False)
    second, problems = fetch_images(urls, cache, workers=2, progress=False)
    assert first == second == {"A": cache / "A.jpg", "B": cache / "B.png"}
    assert not problems
    assert http_server.counts["/a.jpg"] == 1 and http_server.counts["/b.png"] == 1


def test_invalid_cached_file_is_refetched(http_server, tmp_path):
    http_server.routes["/a.jpg"] = JPEG
    cache = tmp_path / "images"
    cache.mkdir()
    (cache / "A.jpg").write_bytes(JPEG[: len(JPEG) // 2])  # truncated by an earlier crash
    fetched, problems = fetch_images({"A": http_server.url("/a.jpg")}, cache, progress=False)
    assert fetched == {"A": cache / "A.jpg"} and not problems
    assert (cache / "A.jpg").read_bytes() == JPEG


def test_oversized_image_is_rejected(http_server, tmp_path):
    http_server.routes["/big.png"] = PNG
    fetched, problems = fetch_images(
        {"BIG": http_server.url("/big.png")}, tmp_path, max_bytes=len(PNG) - 1, progress=False
    )
    assert fetched == {} and dict(problems) == {"image_oversized": 1}
    assert list(tmp_path.iterdir()) == []


def test_many_items_through_a_small_window(http_server, tmp_path):
    # More items than workers * 4 exercises the bounded submission loop.
    http_server.routes["/a.jpg"] = JPEG
    urls = {f"I{i:03d}": http_server.url("/a.jpg") for i in range(40)}
    fetched, problems = fetch_images(urls, tmp_path, workers=2, progress=False)
    assert len(fetched) == 40 and not problems


def test_image_extension():
    assert image_extension("https://m.media-amazon.com/images/I/51x._SX300_.JPG") == ".jpg"
    assert image_extension("http://h/x.webp?size=2") == ".webp"
    assert image_extension("http://h/x.php") == ".jpg"
    assert image_extension("http://h/") == ".jpg"
