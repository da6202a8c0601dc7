"""Image checks bound the work an untrusted file can cause, and catch what would break embedding."""
from __future__ import annotations

import pytest

from pipeline.images import find_local_image, is_safe_id, verify_image, verify_many
from tests.amazon_files import write_image


def test_valid_images_pass(tmp_path):
    assert verify_image(write_image(tmp_path / "a.jpg")) is None
    assert verify_image(write_image(tmp_path / "a.png", fmt="PNG")) is None


def test_problem_kinds(tmp_path):
    ok = write_image(tmp_path / "ok.jpg", size=(64, 64))
    data = ok.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "html.jpg").write_bytes(b"<!doctype html><title>404</title>")
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert verify_image(tmp_path / "cut.jpg") == "image_undecodable"
    assert verify_image(tmp_path / "html.jpg") == "image_undecodable"
    assert verify_image(tmp_path / "empty.jpg") == "image_undecodable"
    assert verify_image(tmp_path / "gone.jpg") == "image_missing"
    assert verify_image(ok, max_bytes=100) == "image_oversized"
    # pixel limit is checked from the header, before any decoding (decompression bombs)
    assert verify_image(ok, max_pixels=64 * 64 - 1) == "image_oversized"
    assert verify_many([ok, tmp_path / "cut.jpg"] * 40) == [None, "image_undecodable"] * 40


@pytest.mark.parametrize("item_id, safe", [
    ("B000123ABC", True), ("0000031852", True), ("../etc/passwd", False), ("a/b", False),
    ("..", False), ("", False), (".hidden", False), ("B00..1", False), ("x" * 200, False),
])
def test_item_ids_that_could_escape_the_folder_are_refused(item_id, safe):
    assert is_safe_id(item_id) is safe


def test_find_local_image_by_extension(tmp_path):
    write_image(tmp_path / "B1.png", fmt="PNG")
    assert find_local_image(tmp_path, "B1") == tmp_path / "B1.png"
    assert find_local_image(tmp_path, "B2") is None
    (tmp_path / "sub").mkdir()
    write_image(tmp_path / "sub" / "x.jpg")
    assert find_local_image(tmp_path, "../" + tmp_path.name + "/sub/x") is None
