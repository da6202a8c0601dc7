"""The embedded default dataset: synthetic, seeded, deterministic, in the raw Amazon 2014 formats.

The project cannot download Amazon data, so its default run uses a dataset it makes itself.
It is built so that the research question is testable:

- every item has a product TYPE (lipstick, shampoo, ...) that appears ONLY in its text
  (title, description, categories) and a visual STYLE (a hue and a pattern) that appears
  ONLY in its image; the text never names a colour or pattern, the image never depends on
  the type (shape, size and position are random);
- users have a main style (each interaction takes it with probability `p_style_main`, else a
  uniformly random style), and product types follow a fixed sparse Markov chain: each type
  has two likely successors (0.6, 0.3) plus 0.1 spread uniformly over all types;
- each interaction picks the next type from the chain given the previous item's type, the
  style from the user's preference, and an item of that (type, style) cell by Zipf-like
  popularity, never an item the user already reviewed.

So the next item depends on the previous item's type (text) and on the user's style (image):
a text-only or image-only recommender cannot reach what a multimodal one can.

Outputs (in one folder, swapped in atomically): `reviews_<Name>_5.json.gz` (JSON lines),
`meta_<Name>.json.gz` (one Python literal per line, as the 2014 meta), `images/<asin>.jpg`,
`ground_truth.csv` (asin,type,style) and `README.md`. Gzip members carry mtime 0 and no file
name, so the same seed gives byte-identical files.
"""
from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pydantic import ConfigDict

from pipeline.artifacts import atomic_dir
from pipeline.errors import PipelineError

SYNTHETIC_URL = "https://synthetic.invalid/images/{asin}.jpg"  # .invalid never resolves (RFC 2606)
JPEG_QUALITY = 90
# Markov chain over types: two likely successors, the rest spread uniformly over all types.
P_SUCCESSORS = (0.6, 0.3)
_ALNUM = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
_DAY0 = dt.date(1970, 1, 1)
_START_FIRST = (dt.date(2012, 1, 1) - _DAY0).days
_START_LAST = (dt.date(2014, 12, 31) - _DAY0).days
_MAX_GAP_DAYS = 60

# ---------------------------------------------------------------- vocabulary
# (type name, category group, type-specific terms). No term names a colour, a pattern or a
# look (no "shade", "tint", "glossy", "rose", "amber", ...): the style lives only in images.
TYPES: list[tuple[str, str, list[str]]] = [
    ("lipstick", "Makeup", ["lips", "creamy lipstick bullet", "smooth lip glide", "hydrating lip formula",
                            "all-day lip wear", "lip liner pairing", "softened lips", "precise lip application"]),
    ("mascara", "Makeup", ["lashes", "lash wand", "volumizing brush", "lengthening fibers", "clump-free lashes",
                           "curl-holding formula", "smudge-proof lash wear", "lash primer"]),
    ("eyeliner", "Makeup", ["eyeliner", "eye line", "fine liner tip", "waterline", "winged eye line",
                            "smudge-proof eye pencil", "built-in sharpener", "lid definition"]),
    ("foundation", "Makeup", ["foundation", "buildable coverage", "complexion", "oil-free base",
                              "blendable foundation formula", "pore blurring", "makeup sponge", "flawless base"]),
    ("blush", "Makeup", ["blush", "cheeks", "cheekbones", "blendable powder", "fluffy blush brush",
                         "baked powder", "cheek compact", "buildable cheek wear"]),
    ("nail polish", "Makeup", ["nail polish", "nails", "cuticles", "base coat", "top coat", "chip-resistant lacquer",
                               "quick-dry manicure", "wide brush applicator"]),
    ("shampoo", "Hair Care", ["shampoo", "scalp", "rich lather", "cleansing hair wash", "roots", "sulfate-free wash",
                              "clarifying formula", "daily hair cleanse"]),
    ("conditioner", "Hair Care", ["conditioner", "detangling", "split ends", "frizz control", "softened hair",
                                  "rinse-out conditioning", "strands", "hair cuticle care"]),
    ("hair oil", "Hair Care", ["hair oil", "argan oil", "heat protection", "frizz-taming drops", "dry ends",
                               "nourishing hair oil", "styling drops", "few drops through lengths"]),
    ("face cleanser", "Skin Care", ["face cleanser", "foaming face wash", "makeup removal", "gentle face wash",
                                    "double cleansing", "cleansing gel", "clogged pores", "morning cleanse"]),
    ("toner", "Skin Care", ["toner", "pH balancing", "witch hazel", "cotton pad", "refined pores",
                            "hydrating essence", "alcohol-free toner", "prep step after cleansing"]),
    ("serum", "Skin Care", ["serum", "hyaluronic acid", "vitamin C", "niacinamide", "glass dropper",
                            "concentrated actives", "fine lines", "retinol serum"]),
    ("moisturizer", "Skin Care", ["moisturizer", "hydration", "ceramides", "night cream", "barrier repair",
                                  "dry skin", "rich moisturizing cream", "plumped skin"]),
    ("sunscreen", "Skin Care", ["sunscreen", "SPF 50", "UVA/UVB protection", "broad spectrum", "reef-safe filters",
                                "water resistant", "sunburn prevention", "mineral zinc"]),
    ("body lotion", "Bath & Body", ["body lotion", "shea butter", "elbows and knees", "after-shower lotion",
                                    "non-greasy body feel", "dry skin relief", "pump bottle", "whole-body hydration"]),
    ("perfume", "Fragrance", ["perfume", "eau de parfum", "fragrance notes", "top notes", "jasmine and musk",
                              "sandalwood base", "spray atomizer", "lasting scent"]),
]
MAX_TYPES = len(TYPES)
BRANDS = ["Aveline", "Solenne", "Kora", "Mirabel", "Nuvia", "Elara", "Fenwick & Co", "Oriel", "Vespera",
          "Calyx", "Brio", "Halden", "Marisol", "Tessaly", "Zenith Labs", "Petalia", "Ondine", "Quill & Birch",
          "Ravelle", "Norda", "Altheia", "Brevik", "Cassia Lane", "Delphine", "Everly", "Faro"]
ADJECTIVES = ["Gentle", "Premium", "Everyday", "Travel-Size", "Long-Lasting", "Professional", "Classic",
              "Advanced", "Essential", "Deluxe", "Ultra", "Daily", "Signature", "Luxe", "Fresh", "Pure",
              "Natural", "Organic", "Vegan", "Hypoallergenic"]
SIZES = ["0.1 oz", "0.15 oz", "0.25 oz", "0.5 fl oz", "1 fl oz", "1.7 fl oz", "3.4 fl oz", "6.8 fl oz",
         "8 fl oz", "12 fl oz", "Pack of 2", "Pack of 3"]
NEUTRAL_SENTENCES = ["Suitable for everyday use.", "Made without parabens.", "Dermatologist tested.",
                     "Cruelty-free and vegan.", "Comes in recyclable packaging.", "Easy to pack for travel.",
                     "Fragrance-free formula.", "Free of phthalates and sulfates.", "Made in small batches.",
                     "Loved by professionals and beginners alike."]
DESCRIPTION_TEMPLATES = ["The {adj} {noun} from {brand} is made for {t1} and {t2}. {neutral}",
                         "{brand} {noun}: {t1}, {t2} and {t3}. {neutral} {neutral2}",
                         "{a_adj} {noun} with {t1}. Designed around {t2}. {neutral}",
                         "Meet the {brand} {noun}. Expect {t1} and {t2}, every time. {neutral}"]
REVIEW_TEMPLATES = ["I have used this {noun} for {n} weeks and it works well. {t1} is great.",
                    "Great {noun}. {t1} exactly as described.",
                    "Not my favorite {noun}, but {t1} is fine for the price.",
                    "My second {noun} from this brand. Love the {t1}.",
                    "Works as expected. {t1} and {t2} are both good.",
                    "Bought this {noun} as a gift and they loved it.",
                    "Good value. The {t1} holds up all day."]
SUMMARIES = ["Love it", "Great {noun}", "Works well", "Good value", "Would buy again", "Nice {noun}",
             "Does the job", "Pretty good", "Five stars", "Happy with it"]
FIRST_NAMES = ["Alex", "Sam", "Jordan", "Taylor", "Morgan", "Casey", "Riley", "Jamie", "Avery", "Quinn", "Maria",
               "Linda", "Karen", "Susan", "Emily", "Sarah", "Jessica", "Ashley", "Laura", "Nancy", "Diane", "Kim"]
RATING_PROBS = np.array([0.03, 0.04, 0.10, 0.28, 0.55])  # 1..5 stars: mostly 4-5, as in the real files

# Styles: hue (evenly spaced) x pattern; names only for the README and ground truth.
PATTERNS = ("solid", "stripes", "dots")
MAX_STYLES = 6 * len(PATTERNS)
_HUE_NAMES = ["red", "orange", "yellow", "chartreuse", "green", "spring", "cyan", "azure", "blue",
              "violet", "magenta", "rose"]
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class SyntheticConfig:
    """The `generate:` section of params.yaml (validated by pydantic: unknown keys are errors)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    seed: int = 0
    n_users: int = 4000
    n_types: int = 16
    n_styles: int = 12
    items_per_cell: int = 14  # items per (type, style) cell
    min_len: int = 6  # interactions per user
    max_len: int = 16
    popularity_exponent: float = 0.8  # Zipf exponent of popularity within a cell
    image_size: int = 64
    p_style_main: float = 0.8
    p_missing_image: float = 0.01  # share of reviewed items without an image file
    p_duplicate_review: float = 0.005  # share of reviews repeated later (same user and item)
    n_unreviewed_items: int = 60  # meta records that no review mentions
    name: str = "Synthetic"

    def problems(self) -> list[tuple[str, str]]:
        """(field, what is wrong) for every invalid setting; empty when the config is usable."""
        out: list[tuple[str, str]] = []

        def need(ok: bool, key: str, msg: str) -> None:
            if not ok:
                out.append((key, f"{msg} (got {getattr(self, key)!r})"))

        need(self.n_users > 0, "n_users", "must be > 0")
        need(1 <= self.n_types <= MAX_TYPES, "n_types", f"must be between 1 and {MAX_TYPES}")
        need(1 <= self.n_styles <= MAX_STYLES, "n_styles", f"must be between 1 and {MAX_STYLES}")
        need(self.items_per_cell >= 1, "items_per_cell", "must be >= 1")
        need(self.min_len >= 1, "min_len", "must be >= 1")
        need(self.max_len >= self.min_len, "max_len", f"must be >= min_len ({self.min_len})")
        need(self.max_len <= 1000, "max_len", "must be <= 1000")
        n_items = self.n_types * self.n_styles * self.items_per_cell
        need(self.max_len <= n_items, "max_len",
             f"must be <= n_types * n_styles * items_per_cell ({n_items}): a user reviews distinct items")
        need(math.isfinite(self.popularity_exponent) and self.popularity_exponent >= 0,
             "popularity_exponent", "must be a finite number >= 0")
        need(16 <= self.image_size <= 1024, "image_size", "must be between 16 and 1024")
        for key in ("p_style_main", "p_missing_image", "p_duplicate_review"):
            need(0.0 <= getattr(self, key) <= 1.0, key, "must be between 0 and 1")
        need(self.n_unreviewed_items >= 0, "n_unreviewed_items", "must be >= 0")
        need(bool(_NAME.match(self.name)), "name", "must be letters, digits, '_' or '-' (it names the files)")
        return out

    def validate(self) -> "SyntheticConfig":
        probs = self.problems()
        if probs:
            key, msg = probs[0]
            raise PipelineError(f"synthetic dataset: {key} {msg}")
        return self


# ---------------------------------------------------------------- structure


def _rng(cfg: SyntheticConfig, part: int) -> np.random.Generator:
    """An independent stream per part, so one knob does not reshuffle unrelated parts."""
    return np.random.default_rng([cfg.seed & 0xFFFFFFFF, cfg.seed >> 32 & 0xFFFFFFFF, part])


def type_names(cfg: SyntheticConfig) -> list[str]:
    return [t[0] for t in TYPES[: cfg.n_types]]


def style_layout(n_styles: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(hue in [0, 1), pattern index, name) per style: as many hues as possible, then patterns."""
    n_patterns = min(len(PATTERNS), max(1, math.ceil(n_styles / 6)))
    n_hues = math.ceil(n_styles / n_patterns)
    s = np.arange(n_styles)
    hue = (s % n_hues) / n_hues
    pattern = s // n_hues
    names = [f"{_HUE_NAMES[int(round(h * 12)) % 12]}/{PATTERNS[p]}" for h, p in zip(hue, pattern)]
    return hue, pattern, names


def type_transition_matrix(cfg: SyntheticConfig) -> np.ndarray:
    """The fixed Markov chain over types (rows sum to 1), a function of the seed.

    Types are arranged on a seeded random cycle; the successors of the i-th are the (i+1)-th
    (0.6) and the (i+2)-th (0.3), the rest 0.1 uniformly. Both successor maps are
    permutations, so the matrix is doubly stochastic and every type is equally frequent.
    """
    n = cfg.n_types
    perm = _rng(cfg, 1).permutation(n)
    p = np.full((n, n), (1.0 - sum(P_SUCCESSORS)) / n)
    for i in range(n):
        for step, prob in enumerate(P_SUCCESSORS, start=1):
            p[perm[i], perm[(i + step) % n]] += prob
    return p


def _ids(rng: np.random.Generator, n: int, prefix: str, length: int, taken: set[str]) -> list[str]:
    """n distinct ids `prefix` + `length` uppercase alphanumerics, none in `taken`."""
    out: list[str] = []
    seen = set(taken)
    while len(out) < n:
        draw = _ALNUM[rng.integers(0, len(_ALNUM), size=(n - len(out), length))]
        for row in draw:
            s = prefix + "".join(row)
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out


def _simulate(cfg: SyntheticConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: (length, main style, item sequence as (n_users, max_len) with -1 padding).

    Items are numbered cell-major: item = (type * n_styles + style) * items_per_cell + rank,
    rank 0 the most popular of its cell.
    """
    U, T, S, K = cfg.n_users, cfg.n_types, cfg.n_styles, cfg.items_per_cell
    lengths = rng.integers(cfg.min_len, cfg.max_len + 1, size=U)
    main = rng.integers(0, S, size=U)
    cum = np.cumsum(type_transition_matrix(cfg), axis=1)
    log_pop = -cfg.popularity_exponent * np.log(np.arange(1, K + 1))
    items = np.full((U, cfg.max_len), -1, dtype=np.int64)
    typ = rng.integers(0, T, size=U)
    rows = np.arange(U)
    for t in range(cfg.max_len):
        if t > 0:
            typ = np.minimum((rng.random(U)[:, None] > cum[typ]).sum(axis=1), T - 1)
        style = np.where(rng.random(U) < cfg.p_style_main, main, rng.integers(0, S, size=U))
        # Gumbel-max over the cell's items by popularity, without the ones already reviewed.
        score = log_pop[None, :] + rng.gumbel(size=(U, K))
        cand = ((typ * S + style) * K)[:, None] + np.arange(K)[None, :]
        used = (cand[:, :, None] == items[:, None, :t]).any(axis=2)
        score[used] = -np.inf
        pick = score.argmax(axis=1)
        for u in np.flatnonzero(used.all(axis=1) & (t < lengths)):
            # The cell is exhausted for this user (rare): same type, another style with room.
            for s in rng.permutation(S):
                free = [k for k in range(K) if (typ[u] * S + s) * K + k not in set(items[u, :t])]
                if free:
                    cand[u, 0], pick[u] = (typ[u] * S + s) * K + free[0], 0
                    break
            else:  # every item of this type is taken: any unused item
                left = np.setdiff1d(np.arange(T * S * K), items[u, :t])
                cand[u, 0], pick[u] = rng.choice(left), 0
                typ[u] = cand[u, 0] // (S * K)  # the chain continues from the item's real type
        items[:, t] = cand[rows, pick]
    items[np.arange(cfg.max_len)[None, :] >= lengths[:, None]] = -1
    return lengths, main, items


# ---------------------------------------------------------------- images


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB in [0, 1], shape (..., 3)."""
    i = np.floor(h * 6.0).astype(int) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(np.shape(h) + (3,))
    for k, (r, g, b) in enumerate(choices):
        m = i == k
        out[m] = np.stack([np.broadcast_to(r, np.shape(h))[m], np.broadcast_to(g, np.shape(h))[m],
                           np.broadcast_to(b, np.shape(h))[m]], axis=-1)
    return out


def _render_images(style: np.ndarray, cfg: SyntheticConfig, rng: np.random.Generator) -> list[bytes]:
    """One JPEG per item: the product in its style's hue and pattern on a light noisy background.

    Shape (rectangle / ellipse / rounded rectangle), size, position, pattern orientation and a
    small hue/saturation/brightness jitter are random per item; nothing depends on the type.
    Rendered in batches with numpy (float32), so ~2,700 64x64 images take about a second.
    """
    n, size = len(style), cfg.image_size
    hues, patterns, _ = style_layout(cfg.n_styles)
    f32 = np.float32
    c = ((np.arange(size) + 0.5) / size).astype(f32)
    yy, xx = c[None, :, None], c[None, None, :]
    shape = rng.integers(0, 3, size=n)
    w, h = rng.uniform(0.4, 0.8, size=n), rng.uniform(0.45, 0.85, size=n)
    cx = 0.5 + rng.uniform(-1, 1, size=n) * (1 - w) / 2 * 0.9
    cy = 0.5 + rng.uniform(-1, 1, size=n) * (1 - h) / 2 * 0.9
    colour = _hsv_to_rgb((hues[style] + rng.uniform(-0.025, 0.025, size=n)) % 1.0,
                         rng.uniform(0.65, 0.9, size=n), rng.uniform(0.6, 0.9, size=n))
    angle = rng.integers(0, 4, size=n) * (np.pi / 4)
    period = rng.uniform(0.09, 0.15, size=n)
    bg = rng.uniform(0.85, 0.96, size=n)[:, None] + rng.uniform(-0.02, 0.02, size=(n, 3))
    pattern = patterns[style]
    out: list[bytes] = []
    for lo in range(0, n, 256):
        sl = slice(lo, min(n, lo + 256))
        b = sl.stop - sl.start

        def col(a: np.ndarray) -> np.ndarray:
            return a[sl].astype(f32)[:, None, None]

        dx, dy = np.abs(xx - col(cx)), np.abs(yy - col(cy))
        hw, hh = col(w) / 2, col(h) / 2
        box = (dx <= hw) & (dy <= hh)
        r = 0.3 * np.minimum(hw, hh)
        qx, qy = np.maximum(dx - (hw - r), 0), np.maximum(dy - (hh - r), 0)
        shp = shape[sl][:, None, None]
        mask = np.where(shp == 0, box, np.where(shp == 1, (dx / hw) ** 2 + (dy / hh) ** 2 <= 1.0,
                                                box & (qx * qx + qy * qy <= r * r)))
        # Stripes: alternate bands lightened toward white; dots: a grid of lightened discs.
        u = xx * col(np.cos(angle)) + yy * col(np.sin(angle))
        stripes = np.floor(u / col(period)).astype(np.int32) % 2 == 1
        fx = (xx - col(cx)) / col(period) % 1.0 - 0.5
        fy = (yy - col(cy)) / col(period) % 1.0 - 0.5
        dots = fx * fx + fy * fy <= 0.09
        pat = pattern[sl][:, None, None]
        light = np.where(pat == 1, stripes, np.where(pat == 2, dots, False))[..., None]
        base = colour[sl].astype(f32)[:, None, None, :]
        prod = np.where(light, base * 0.5 + 0.5, base)
        # Soft vertical shading for a little realism.
        prod = prod * (1.0 - 0.12 * ((yy - col(cy)) / col(h)))[..., None]
        noise = rng.random(size=(b, size, size, 3), dtype=f32) - 0.5  # uniform: 5x cheaper than normal
        img = np.where(mask[..., None], prod + 0.05 * noise, bg[sl].astype(f32)[:, None, None, :] + 0.1 * noise)
        arr = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        for k in range(b):
            buf = io.BytesIO()
            Image.fromarray(arr[k], "RGB").save(buf, format="JPEG", quality=JPEG_QUALITY)
            out.append(buf.getvalue())
    return out


# ---------------------------------------------------------------- text


def _meta_records(asins: list[str], typ: np.ndarray, cfg: SyntheticConfig, rng: np.random.Generator) -> list[dict]:
    n = len(asins)
    brand = rng.integers(0, len(BRANDS), size=n)
    adj = rng.integers(0, len(ADJECTIVES), size=n)
    size_ = rng.integers(0, len(SIZES), size=n)
    tmpl = rng.integers(0, len(DESCRIPTION_TEMPLATES), size=n)
    neutral = rng.integers(0, len(NEUTRAL_SENTENCES), size=(n, 2))
    terms = np.argsort(rng.random((n, len(TYPES[0][2]))), axis=1)[:, :3]
    price = np.round(np.exp(rng.normal(np.log(14.0), 0.6, size=n)), 0) - 0.01
    no_price = rng.random(n) < 0.03  # the real meta often lacks a price
    out = []
    for k in range(n):
        name, group, vocab = TYPES[typ[k]]
        noun = name.title()
        t1, t2, t3 = (vocab[j] for j in terms[k])
        title = f"{BRANDS[brand[k]]} {ADJECTIVES[adj[k]]} {noun} with {t1.title()}, {SIZES[size_[k]]}"
        desc = DESCRIPTION_TEMPLATES[tmpl[k]].format(
            adj=ADJECTIVES[adj[k]].lower(), a_adj=_article(ADJECTIVES[adj[k]]).capitalize(), noun=name, brand=BRANDS[brand[k]], t1=t1, t2=t2, t3=t3,
            neutral=NEUTRAL_SENTENCES[neutral[k, 0]], neutral2=NEUTRAL_SENTENCES[neutral[k, 1]])
        rec: dict[str, Any] = {
            "asin": asins[k],
            "title": title,
            "description": desc,
            "imUrl": SYNTHETIC_URL.format(asin=asins[k]),
            "categories": [["Beauty", group, noun]],
            "brand": BRANDS[brand[k]],
        }
        if not no_price[k]:
            rec["price"] = float(max(price[k], 0.99))
        out.append(rec)
    return out


def _article(word: str) -> str:
    return f"{'an' if word[0].lower() in 'aeiou' else 'a'} {word.lower()}"


def _review_time(days: np.ndarray) -> list[str]:
    """'MM D, YYYY' as in the 2014 files (month zero-padded, day not)."""
    d = days.astype("datetime64[D]")
    year = d.astype("datetime64[Y]").astype(int) + 1970
    month = d.astype("datetime64[M]").astype(int) % 12 + 1
    day = (d - d.astype("datetime64[M]")).astype(int) + 1
    return [f"{m:02d} {dd}, {y}" for m, dd, y in zip(month.tolist(), day.tolist(), year.tolist())]


def _gzip_lines(lines: list[str]) -> bytes:
    data = ("\n".join(lines) + "\n").encode("utf-8") if lines else b""
    return gzip.compress(data, compresslevel=6, mtime=0)  # no file name, mtime 0: reproducible bytes


# ---------------------------------------------------------------- the dataset


@dataclass
class _Log:
    """The simulated interactions, row-major (users in order, then time), plus duplicate lines."""

    user_of: np.ndarray
    item_of: np.ndarray  # grid item number, see _simulate
    day_of: np.ndarray
    dup_src: np.ndarray  # which interactions are repeated
    dup_day: np.ndarray  # and on which later day


def _interactions(cfg: SyntheticConfig) -> _Log:
    lengths, _main_style, seq = _simulate(cfg, _rng(cfg, 2))
    mask = seq >= 0
    user_of = np.repeat(np.arange(cfg.n_users), lengths)
    rng = _rng(cfg, 3)
    gaps = rng.integers(1, _MAX_GAP_DAYS + 1, size=(cfg.n_users, cfg.max_len))
    gaps[:, 0] = rng.integers(_START_FIRST, _START_LAST + 1, size=cfg.n_users)
    day_of = np.cumsum(gaps, axis=1)[mask]
    dup_src, dup_day = _duplicates(cfg, lengths, user_of, day_of, rng)
    return _Log(user_of, seq[mask], day_of, dup_src, dup_day)


def _duplicates(cfg, lengths, user_of, day_of, rng) -> tuple[np.ndarray, np.ndarray]:
    """Repeated reviews: same user and item, on a later day no other review of the user has
    (so the repeat never ties with, or reorders, the user's real sequence)."""
    n_inter = len(user_of)
    n_dup = int(round(cfg.p_duplicate_review * n_inter))
    dup_src = np.sort(rng.choice(n_inter, size=n_dup, replace=False)) if n_dup else np.zeros(0, dtype=int)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    dup_day = np.empty(n_dup, dtype=np.int64)
    for j, i in enumerate(dup_src):
        u = user_of[i]
        taken = set(day_of[starts[u]:starts[u + 1]].tolist()) | set(dup_day[:j][user_of[dup_src[:j]] == u].tolist())
        free = [day_of[i] + g for g in range(1, _MAX_GAP_DAYS + 1) if day_of[i] + g not in taken]
        dup_day[j] = free[rng.integers(0, len(free))] if free else max(taken) + 1
    return dup_src, dup_day


@dataclass
class _Items:
    """Reviewed items first (in grid order), then the unreviewed ones."""

    asins: list[str]
    asin_of: np.ndarray  # grid item number -> asin ("" for grid items nobody reviewed)
    type: np.ndarray
    style: np.ndarray
    n_reviewed: int
    missing_image: set[int]  # positions in `asins`


def _items(cfg: SyntheticConfig, log: _Log) -> tuple[_Items, list[str]]:
    """The item catalogue and the user ids (both drawn from one id stream)."""
    T, S, K = cfg.n_types, cfg.n_styles, cfg.items_per_cell
    reviewed = np.flatnonzero(np.bincount(log.item_of, minlength=T * S * K) > 0)
    n_rev, n_unrev = len(reviewed), cfg.n_unreviewed_items
    id_rng = _rng(cfg, 4)
    user_ids = _ids(id_rng, cfg.n_users, "A", 13, set())
    asins = _ids(id_rng, n_rev + n_unrev, "B0", 8, set())
    asin_of = np.full(T * S * K, "", dtype=object)
    asin_of[reviewed] = asins[:n_rev]
    rng = _rng(cfg, 5)
    # The reviewed items' attributes come from their cell; the unreviewed ones' are random.
    typ = np.concatenate([reviewed // (S * K), rng.integers(0, T, size=n_unrev)]).astype(int)
    style = np.concatenate([reviewed // K % S, rng.integers(0, S, size=n_unrev)]).astype(int)
    n_missing = int(round(cfg.p_missing_image * n_rev))
    missing = set(rng.choice(n_rev, size=n_missing, replace=False).tolist()) if n_missing else set()
    return _Items(asins, asin_of, typ, style, n_rev, missing), user_ids


def _review_lines(cfg: SyntheticConfig, log: _Log, items: _Items, user_ids: list[str],
                  rng: np.random.Generator) -> list[str]:
    """JSON review lines like the 2014 files, duplicates included, in shuffled order."""
    n_inter = len(log.item_of)
    names = [f"{FIRST_NAMES[a]} {chr(65 + b)}." if b < 26 else "Amazon Customer"
             for a, b in zip(rng.integers(0, len(FIRST_NAMES), size=cfg.n_users).tolist(),
                             rng.integers(0, 30, size=cfg.n_users).tolist())]
    rating = rng.choice(5, size=n_inter, p=RATING_PROBS) + 1
    tmpl = rng.integers(0, len(REVIEW_TEMPLATES), size=n_inter)
    summ = rng.integers(0, len(SUMMARIES), size=n_inter)
    weeks = rng.integers(1, 13, size=n_inter)
    terms = np.argsort(rng.random((n_inter, len(TYPES[0][2]))), axis=1)[:, :2]
    inter_type = (log.item_of // (cfg.n_styles * cfg.items_per_cell)).tolist()
    times = _review_time(np.concatenate([log.day_of, log.dup_day]))
    lines: list[str] = []
    for i in range(n_inter):
        name, _, vocab = TYPES[inter_type[i]]
        t1, t2 = vocab[terms[i, 0]], vocab[terms[i, 1]]
        u = int(log.user_of[i])
        lines.append(json.dumps({
            "reviewerID": user_ids[u],
            "asin": items.asin_of[log.item_of[i]],
            "reviewerName": names[u],
            "helpful": [0, 0],
            "reviewText": REVIEW_TEMPLATES[tmpl[i]].format(noun=name, n=weeks[i], t1=t1.capitalize(), t2=t2),
            "overall": float(rating[i]),
            "summary": SUMMARIES[summ[i]].format(noun=name),
            "unixReviewTime": int(log.day_of[i]) * 86400,
            "reviewTime": times[i],
        }))
    for j, i in enumerate(log.dup_src):
        obj = json.loads(lines[i])
        obj["unixReviewTime"] = int(log.dup_day[j]) * 86400
        obj["reviewTime"] = times[n_inter + j]
        lines.append(json.dumps(obj))
    order = rng.permutation(len(lines))  # the real files are not grouped by user
    return [lines[i] for i in order]


def generate(cfg: SyntheticConfig, out_dir: str | Path) -> dict:
    """Write the dataset into `out_dir` (replaced atomically) and return its counts."""
    cfg.validate()
    log = _interactions(cfg)
    items, user_ids = _items(cfg, log)
    meta = _meta_records(items.asins, items.type, cfg, _rng(cfg, 6))
    jpegs = _render_images(items.style, cfg, _rng(cfg, 7))
    rng = _rng(cfg, 8)
    lines = _review_lines(cfg, log, items, user_ids, rng)
    meta_lines = [repr(meta[i]) for i in rng.permutation(len(meta))]

    per_item = np.bincount(log.item_of, minlength=cfg.n_types * cfg.n_styles * cfg.items_per_cell)
    counts = {
        "name": cfg.name,
        "synthetic": True,
        "seed": cfg.seed,
        "users": cfg.n_users,
        "items": len(meta),
        "reviewed_items": items.n_reviewed,
        "unreviewed_items": cfg.n_unreviewed_items,
        "interactions": len(log.item_of),
        "duplicate_reviews": len(log.dup_src),
        "reviews": len(lines),
        "images": len(meta) - len(items.missing_image),
        "missing_images": len(items.missing_image),
        "items_with_5_interactions": int((per_item >= 5).sum()),
        "types": cfg.n_types,
        "styles": cfg.n_styles,
    }
    type_list = type_names(cfg)
    _, _, style_list = style_layout(cfg.n_styles)
    truth = ["asin,type,style"] + sorted(
        f"{a},{type_list[t]},{style_list[s]}" for a, t, s in zip(items.asins, items.type, items.style))

    with atomic_dir(out_dir) as tmp:
        (tmp / f"reviews_{cfg.name}_5.json.gz").write_bytes(_gzip_lines(lines))
        (tmp / f"meta_{cfg.name}.json.gz").write_bytes(_gzip_lines(meta_lines))
        img_dir = tmp / "images"
        img_dir.mkdir()
        for k, data in enumerate(jpegs):
            if k not in items.missing_image:
                (img_dir / f"{items.asins[k]}.jpg").write_bytes(data)
        (tmp / "ground_truth.csv").write_text("\n".join(truth) + "\n")
        (tmp / "README.md").write_text(_readme(cfg, counts, type_list, style_list))
    return counts


def _readme(cfg: SyntheticConfig, counts: dict, type_list: list[str], style_list: list[str]) -> str:
    p = type_transition_matrix(cfg)
    chain = ", ".join(f"{type_list[i]} -> {type_list[int(np.argsort(-p[i])[0])]} / {type_list[int(np.argsort(-p[i])[1])]}"
                      for i in range(len(type_list))) if len(type_list) > 1 else "(one type)"
    knobs = "\n".join(f"- `{f.name}`: {getattr(cfg, f.name)!r}" for f in fields(cfg))
    count_lines = "\n".join(f"- {k}: {v}" for k, v in counts.items())
    return f"""# SYNTHETIC dataset `{cfg.name}` (not real Amazon data)

Generated by `mgr generate` (`pipeline/synthetic.py`), seeded and deterministic, in the raw
Amazon 2014 file formats so the pipeline ingests it like a real category. Every review, user,
product, brand and image here is made up. Image URLs use the `.invalid` domain and never resolve;
the images are in `images/<asin>.jpg`.

## Generative story
- Each item has a product TYPE ({', '.join(type_list)}) that appears only in its text (title,
  description, categories), and a visual STYLE ({', '.join(style_list)}) that appears only in its
  image. The text never names a colour or pattern; the image's shape, size and position are random
  and never depend on the type.
- {cfg.items_per_cell} items per (type, style) cell, Zipf-like popularity (exponent {cfg.popularity_exponent}).
- Each user has a main style, taken with probability {cfg.p_style_main} per interaction (else a
  uniformly random style). Types follow a fixed Markov chain: two likely successors
  ({P_SUCCESSORS[0]}, {P_SUCCESSORS[1]}), the rest {1 - sum(P_SUCCESSORS):.1f} spread uniformly; the first type is uniform.
  Chain (most likely / second successor): {chain}.
- Each interaction: next type from the chain given the previous item's type, style from the
  user's preference, then an item of that cell by popularity that the user has not reviewed yet.
  Predicting the next item needs the previous item's type (text) and the user's style (image).
- Each user has {cfg.min_len}-{cfg.max_len} reviews, one per day at random gaps of 1-{_MAX_GAP_DAYS} days from a
  start in 2012-2014 (strictly increasing per user); lines are shuffled.
- Deliberate defects for ingestion to handle: {counts['duplicate_reviews']} duplicate review lines
  (same user and item, later day), {counts['missing_images']} reviewed items without an image file,
  {counts['unreviewed_items']} meta records that no review mentions, a few meta records without a price.
- `ground_truth.csv` holds each item's type and style, for analyses (never for training).

## Settings
{knobs}

## Counts
{count_lines}
"""
