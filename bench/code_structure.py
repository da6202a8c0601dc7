"""What structure do semantic-ID tables carry, before any recommender is trained on them?

    python bench/code_structure.py --embeddings E.parquet --splits splits.parquet \
        --ids NAME=semantic_ids.parquet [NAME=...] [--out bench/results/code_structure.json]

For each table of codes (a `quantize` output) over the same items, two views that need no training:
- content: of each item's 10 nearest items by cosine on the (centred) item vectors, the share that
  has the same first code, and the same first two codes. A quantizer that keeps the vectors'
  neighbourhoods scores high.
- sequences: over the consecutive pairs (a, b) of the users' training histories, the share where b
  has a's first code (first two codes), and the mutual information in bits between a's and b's code
  at each level (plug-in estimate over a K x K table: biased upwards by about (K-1)^2 / (2 n ln 2)
  bits, the same for every table of one K and pair count, so compare tables, not the absolute value).
  This is the structure the recommender can use to predict the next item's code from the last one's.
The first table with its rows' codes dealt to other items (one seeded permutation) is the control:
the figures of codes without structure, with the same code frequencies.

Two tables with the same figures here may still train different recommenders: these are the
codes' first-order statistics only. Single-threaded; about a minute on Beauty's 12k items.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402

from pipeline.quantize import read_item_vectors  # noqa: E402
from pipeline.semantic_ids import code_levels, read_ids  # noqa: E402

NEIGHBOURS = 10


def nearest_rows(x: np.ndarray) -> np.ndarray:
    """(n, NEIGHBOURS) rows of each row's nearest other rows of x by cosine, after centring."""
    x = torch.nn.functional.normalize(torch.from_numpy(x - x.mean(0)), dim=1)
    out = []
    for i in range(0, len(x), 2048):
        s = x[i:i + 2048] @ x.T
        s[torch.arange(len(s)), torch.arange(i, i + len(s))] = -2.0  # not its own neighbour
        out.append(s.topk(NEIGHBOURS, dim=1).indices)
    return torch.cat(out).numpy()


def history_pairs(path: Path) -> np.ndarray:
    """(m, 2) consecutive item_idx pairs of every user's training history."""
    train = pl.read_parquet(path, columns=["train"])["train"].to_list()
    return np.array([(a, b) for t in train for a, b in zip(t[:-1], t[1:])], dtype=np.int64).reshape(-1, 2)


def mutual_information(a: np.ndarray, b: np.ndarray, k: int) -> float:
    joint = np.zeros((k, k))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) @ joint.sum(0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / outer[nz])).sum())


def structure(ids_path: Path, items: np.ndarray, neighbours: np.ndarray, pairs: np.ndarray, shuffle: bool = False) -> dict:
    """`items`: the vectors' item_idx in order, the rows of `neighbours`."""
    ids = read_ids(ids_path)
    if shuffle:  # the same codes dealt to other items: what the figures are without any structure
        ids = ids.with_columns(pl.all().exclude("item_idx").shuffle(seed=0))
    if set(ids["item_idx"].to_list()) != set(items.tolist()):
        sys.exit(f"{ids_path}: its items are not the embeddings' items")
    levels = code_levels(ids)
    codes = []  # per level, indexed by item_idx
    for c in levels:
        by_idx = np.zeros(int(items.max()) + 1, dtype=np.int64)
        by_idx[ids["item_idx"].to_numpy()] = ids[c].to_numpy()
        codes.append(by_idx)
    k = int(max(c.max() for c in codes)) + 1
    first, prefix = codes[0], codes[0] * k + codes[1]
    a, b = pairs[:, 0], pairs[:, 1]
    return {
        "items": ids.height, "codebook_size_seen": k,
        "knn_same_code_1": round(float((first[neighbours] == first[items, None]).mean()), 4),
        "knn_same_codes_1_2": round(float((prefix[neighbours] == prefix[items, None]).mean()), 4),
        "next_same_code_1": round(float((first[a] == first[b]).mean()), 4),
        "next_same_codes_1_2": round(float((prefix[a] == prefix[b]).mean()), 4),
        "next_mi_bits": {name: round(mutual_information(c[a], c[b], k), 4) for name, c in zip(levels, codes)},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--embeddings", type=Path, required=True, help="an embed output (item_idx, embedding)")
    ap.add_argument("--splits", type=Path, required=True, help="ingest's splits.parquet (train histories)")
    ap.add_argument("--ids", nargs="+", required=True, help="NAME=semantic_ids.parquet, one per table")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tables = dict(s.split("=", 1) for s in args.ids)
    keys, x = read_item_vectors(args.embeddings)
    items = keys["item_idx"].to_numpy()
    neighbours, pairs = items[nearest_rows(x)], history_pairs(args.splits)
    result = {
        "what": "structure of semantic-ID tables: content neighbourhoods and next-item pairs (bench/code_structure.py)",
        "date": dt.date.today().isoformat(), "machine": machine(),
        "embeddings": str(args.embeddings), "splits": str(args.splits), "pairs": len(pairs),
        "tables": {name: {"path": path, **structure(Path(path), items, neighbours, pairs)} for name, path in tables.items()},
    }
    first = next(iter(tables.values()))
    result["control_shuffled"] = {"path": first, **structure(Path(first), items, neighbours, pairs, shuffle=True)}
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
