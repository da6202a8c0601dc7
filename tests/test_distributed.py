"""Training under torchrun: 2 CPU processes (gloo) end where the single-process run ends."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.params import AlignParams, ModelParams, RecommenderParams, TrainParams, VariantParams
from pipeline.sequences import build_sequences
from pipeline.train import train_variant
from tests.recsys_data import write_tiny_dataset

# No dropout: the ranks' dropout draws differ from the single process's by design.
REC = RecommenderParams(
    model=ModelParams(encoder_layers=1, decoder_layers=1, d_model=32, heads=2, d_kv=16, d_ff=64, dropout=0.0),
    train=TrainParams(batch_size=16, lr=3e-3, warmup_steps=5, max_epochs=3, patience=5, beam=10, top_k=10,
                      eval_batch=16, checkpoint_every=7, eval_users=0))
LFPP = VariantParams(modalities=["text", "image"], transition=True, align=AlignParams(epochs=1, lr=3e-3))
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    seq = tmp_path / "seq"
    build_sequences(data / "splits.parquet", data / "semantic_ids", ["text", "image"], True, 20, 0, seq)
    torch.set_num_threads(1)
    single = train_variant(seq, LFPP, REC, tmp_path / "one" / "m.pt", tmp_path / "one" / "m.json", None,
                           tmp_path / "one" / "work")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "ddp_train.py"), str(seq), str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "m.json").read_text())
    assert two["train"]["processes"] == 2 and two["train"]["steps"] == single["train"]["steps"]
    a = torch.load(tmp_path / "one" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "m.pt", weights_only=True)["state_dict"]
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, atol=1e-5, rtol=1e-4, msg=name)
    for metric in ("recall@10", "ndcg@10"):
        assert abs(two["valid"][metric] - single["valid"][metric]) <= 0.05
