"""Tiny encoders for tests: a 2-layer BERT saved like a hub folder, a tiny CLIP registered with open_clip."""
from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP = "mgr-test-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
WORDS = ("red blue soft long lasting lipstick mascara shampoo hair lips eyes cream oily clean gentle colour "
         "for the a with and of that , .").split()


def make_tiny_bert(folder: Path) -> Path:
    """A 2-layer BERT and its WordPiece tokenizer, saved like any model folder on the hub."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(vocab_size=5 + len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(1234)  # not a seed the tests pass as `seed`: saved and random weights must differ
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def register_tiny_clip(folder: Path) -> str:
    """Register a tiny CLIP architecture with open_clip (as any `<name>.json` model config)."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{TINY_CLIP}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(path)
    return TINY_CLIP
