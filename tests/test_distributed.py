"""Under torchrun, 2 CPU processes (gloo) end where one process ends: training, and embedding
(sharded chunks merged by rank 0, resuming a killed run's chunks)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pipeline.embed as embed_mod
from pipeline import distributed
from pipeline.errors import PipelineError
from pipeline.params import AlignParams, ModelParams, RecommenderParams, TrainParams, VariantParams
from pipeline.sequences import build_sequences
from pipeline.train import train_variant
from stages.embed import embed as embed_command
from tests.recsys_data import write_tiny_dataset
from tests import test_embed

# No dropout: the ranks' dropout draws differ from the single process's by design.
REC = RecommenderParams(
    model=ModelParams(encoder_layers=1, decoder_layers=1, d_model=32, heads=2, d_kv=16, d_ff=64, dropout=0.0),
    train=TrainParams(batch_size=16, lr=3e-3, warmup_steps=5, max_epochs=3, patience=5, beam=10, top_k=10,
                      eval_batch=16, checkpoint_every=7, eval_users=0))
LFPP = VariantParams(modalities=["text", "image"], transition=True, align=AlignParams(epochs=1, lr=3e-3))
ROOT = Path(__file__).resolve().parents[1]
items = test_embed.items  # the fixture: 7 items, some without text or with a broken image


@pytest.mark.parametrize("value", ["", "auto", "CPU", "cpu "])
def test_device_is_the_cpu_without_a_gpu(value, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MGR_DEVICE", value or "auto")
    assert distributed.device() == torch.device("cpu")


def test_device_errors_name_the_variable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("MGR_DEVICE", "cuda")
    with pytest.raises(PipelineError, match="MGR_DEVICE=cuda: torch sees no CUDA device"):
        distributed.device()
    monkeypatch.setenv("MGR_DEVICE", "gpu")
    with pytest.raises(PipelineError, match="MGR_DEVICE: must be one of auto, cpu, cuda"):
        distributed.device()


def test_device_takes_the_gpu_of_the_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("MGR_DEVICE", "auto")
    monkeypatch.setenv("LOCAL_RANK", "5")
    assert distributed.device() == torch.device("cuda", 1)


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_to_the_same_weights(tmp_path):
    """With dropout on, so that every rank's RNG state must come back from the checkpoint."""
    data = write_tiny_dataset(tmp_path / "data")
    seq = tmp_path / "seq"
    build_sequences(data / "splits.parquet", data / "semantic_ids", ["text", "image"], True, 20, 0, seq)

    def torchrun(out: str, *extra: str) -> None:
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                              str(ROOT / "tests" / "ddp_train.py"), str(seq), str(tmp_path / out), "0.2", *extra],
                             capture_output=True, text=True, timeout=300, env=_torchrun_env(), cwd=ROOT)
        assert res.returncode == 0, res.stderr[-3000:]

    torchrun("whole")
    torchrun("resumed", "11")  # stops mid-epoch, between two scheduled checkpoints (every 7 steps)
    assert not (tmp_path / "resumed" / "m.pt").exists()
    torchrun("resumed")
    a = torch.load(tmp_path / "whole" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "resumed" / "m.pt", weights_only=True)["state_dict"]
    for name, value in a.items():
        assert torch.equal(b[name], value), name
    whole = json.loads((tmp_path / "whole" / "m.json").read_text())
    resumed = json.loads((tmp_path / "resumed" / "m.json").read_text())
    assert resumed["valid"] == whole["valid"]
    assert resumed["train"]["steps"] == whole["train"]["steps"]


def _torchrun_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MGR_DEVICE": "cpu"}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data = write_tiny_dataset(tmp_path / "data")
    seq = tmp_path / "seq"
    build_sequences(data / "splits.parquet", data / "semantic_ids", ["text", "image"], True, 20, 0, seq)
    torch.set_num_threads(1)
    single = train_variant(seq, LFPP, REC, tmp_path / "one" / "m.pt", tmp_path / "one" / "m.json", None,
                           tmp_path / "one" / "work")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "ddp_train.py"), str(seq), str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=300, env=_torchrun_env(), cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "m.json").read_text())
    assert two["train"]["processes"] == 2 and two["train"]["steps"] == single["train"]["steps"]
    a = torch.load(tmp_path / "one" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "two" / "m.pt", weights_only=True)["state_dict"]
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, atol=1e-5, rtol=1e-4, msg=name)
    for metric in ("recall@10", "ndcg@10"):
        assert abs(two["valid"][metric] - single["valid"][metric]) <= 0.05


@pytest.mark.slow
@pytest.mark.parametrize("modality", ["text", "image"])
def test_embedding_shards_merge_into_the_single_process_file(modality, tiny_bert, tiny_clip, items, one_thread,
                                                             tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    params.write_text(f"embed:\n  text:\n    model: tiny\n    weights: {tiny_bert}\n    chunk_size: 2\n"
                      f"  image:\n    model: {tiny_clip}\n    weights: random\n    chunk_size: 2\n")
    items_path = tmp_path / "items.parquet"
    items.write_parquet(items_path)  # 7 items: chunks 0-3; rank 0 encodes 0 and 2, rank 1 encodes 1 and 3
    args = dict(modality=modality, params=params, items=items_path, progress=False)
    embed_command(**args, out_dir=tmp_path / "one", work_dir=tmp_path / "work-one")
    # A single-process run killed after its first chunk: the two processes resume from it.
    monkeypatch.setattr(embed_mod, "write_chunk", test_embed._crash_after_first(embed_mod.write_chunk))
    with pytest.raises(KeyboardInterrupt):
        embed_command(**args, out_dir=tmp_path / "two", work_dir=tmp_path / "work")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(ROOT / "tests" / "ddp_embed.py"), str(tmp_path / "clip"), "--",
                          "--modality", modality, "--params", str(params), "--items", str(items_path),
                          "--out-dir", str(tmp_path / "two"), "--work-dir", str(tmp_path / "work"), "--no-progress"],
                         capture_output=True, text=True, timeout=300, env=_torchrun_env(), cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "2 process(es)" in res.stderr
    one, two = tmp_path / "one" / f"{modality}.parquet", tmp_path / "two" / f"{modality}.parquet"
    assert two.read_bytes() == one.read_bytes()
    report_one = json.loads((tmp_path / "one" / f"{modality}_report.json").read_text())
    report_two = json.loads((tmp_path / "two" / f"{modality}_report.json").read_text())
    assert report_two.pop("resumed_chunks") == 1 and report_one.pop("resumed_chunks") == 0
    assert report_two == report_one  # the skipped counts of every shard included
    assert not any((tmp_path / "work").iterdir())  # merged shards are removed
