"""Worker for tests/test_distributed.py: `torchrun --nproc_per_node N tests/ddp_embed.py CLIP_DIR -- <mgr embed args>`.

Registers the tests' tiny CLIP architecture (open_clip's registry is per process), then runs
the `mgr embed` command itself, so every rank goes through the stage as a user's would.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from stages.app import app  # noqa: E402
from tests.tiny_models import register_tiny_clip  # noqa: E402

torch.set_num_threads(1)
register_tiny_clip(Path(sys.argv[1]))
app(["embed", *sys.argv[3:]])
