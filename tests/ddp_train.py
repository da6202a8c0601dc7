"""Worker for tests/test_distributed.py: `torchrun --nproc_per_node N tests/ddp_train.py SEQ_DIR OUT_DIR`.

Trains the tiny lfpp recommender of tests/test_distributed.py (alignment, then next-item
training), each process on its slice of every batch; rank 0 writes OUT_DIR/m.pt and m.json.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipeline.train import train_variant  # noqa: E402
from tests.test_distributed import LFPP, REC  # noqa: E402

torch.set_num_threads(1)
seq_dir, out = Path(sys.argv[1]), Path(sys.argv[2])
train_variant(seq_dir, LFPP, REC, out / "m.pt", out / "m.json", out / "live", out / "work")
