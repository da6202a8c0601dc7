"""Product images -> one vector per image with the open_clip image tower.

`load_image` decodes one file into the model's input tensor (it runs in decode threads);
`encode` runs the tower on a stacked batch. A file that cannot be used raises BadImage
with the same problem kinds ingestion counts, so the embedding report reads like its own.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pipeline import distributed, precision
from pipeline.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from pipeline.weights import load_open_clip

KEY = "embed.image"


class BadImage(Exception):
    """A file that cannot be embedded; `kind` is the problem counter it goes to."""

    def __init__(self, kind: str):
        super().__init__(kind)
        self.kind = kind


class ImageEncoder:
    def __init__(self, cfg: Any, key: str = KEY):
        clip = load_open_clip(key, cfg)
        self.model, self.preprocess, self.weights = clip.model, clip.preprocess, clip.weights
        self.device = distributed.device()  # MGR_DEVICE; decoding and preprocessing stay on the CPU
        self.dtype = precision.resolve(cfg.dtype, self.device)
        self.model.to(self.device)
        self.dim = int(self.encode(self.preprocess(Image.new("RGB", (8, 8))).unsqueeze(0)).shape[1])

    def load_image(self, path: str | Path) -> torch.Tensor:
        """Decode `path` as RGB and apply the model's preprocessing; raises BadImage."""
        return self.preprocess(decode_rgb(Path(path)))

    @torch.inference_mode()
    def encode(self, batch: torch.Tensor) -> np.ndarray:
        with precision.autocast(self.device, self.dtype):
            return self.model.encode_image(batch.to(self.device)).float().cpu().numpy()


def decode_rgb(path: Path) -> Image.Image:
    # Ingestion checked these files, but the embedding stage can be pointed at any items file,
    # so the same bounds apply here: bytes before opening, pixels before decoding.
    try:
        size = path.stat().st_size
    except OSError:
        raise BadImage("image_missing") from None
    if size > MAX_IMAGE_BYTES:
        raise BadImage("image_oversized")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                if im.size[0] * im.size[1] > MAX_IMAGE_PIXELS:
                    raise BadImage("image_oversized")
                return im.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("image_oversized") from None
    except (OSError, ValueError, SyntaxError):
        raise BadImage("image_undecodable") from None
