"""Worker for tests/test_distributed.py:
`torchrun --nproc_per_node N tests/ddp_train.py SEQ_DIR OUT_DIR [DROPOUT [STOP_AFTER_STEPS]]`.

Trains the tiny lfpp recommender of tests/test_distributed.py (alignment, then next-item
training), each process on its slice of every batch; rank 0 writes OUT_DIR/m.pt and m.json.
With STOP_AFTER_STEPS the run stops there, checkpointed in OUT_DIR/work; the same command
without it resumes.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.train import train_variant  # noqa: E402
from tests.test_distributed import LFPP, REC  # noqa: E402

torch.set_num_threads(1)
seq_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
rec = REC
if len(sys.argv) > 3:
    rec = REC.model_copy(update={"model": REC.model.model_copy(update={"dropout": float(sys.argv[3])})})
stop = int(sys.argv[4]) if len(sys.argv) > 4 else None
train_variant(seq_dir, LFPP, rec, out / "m.pt", out / "m.json", out / "live", out / "work", stop_after_steps=stop)
