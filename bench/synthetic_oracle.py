"""Recall@10 ceilings of the embedded dataset for an oracle that knows each item's true type
(text), style (image) or both: see pipeline/attribute_oracle.py.

    python bench/synthetic_oracle.py      # after `make run` (reads data/ingested, data/raw/synthetic)

Writes bench/results/synthetic_oracle.json. Deterministic: one run is the figure.
"""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from pipeline.attribute_oracle import attribute_oracle

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    recall = attribute_oracle(ROOT / "data" / "ingested", ROOT / "data" / "raw" / "synthetic" / "ground_truth.csv")
    result = {"what": "Recall@10 on test targets, embedded dataset with params.yaml defaults",
              "date": dt.date.today().isoformat(), "recall@10": recall}
    (ROOT / "bench" / "results" / "synthetic_oracle.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
