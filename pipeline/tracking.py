"""Training curves through DVCLive, rebuilt from a checkpoint's history on resume.

DVC deletes a stage's outputs before it reruns it, so after a kill the DVCLive folder is gone
while the training checkpoint (kept in `data/cache`) is not. The checkpoint therefore carries
the logged history, and a resumed run replays it first: the curves of a resumed run equal
those of an uninterrupted one. `dvc.yaml` declares the plots, so DVCLive writes no dvc.yaml.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any


def _plots_only_live(out_dir: str):
    """DVCLive without its DVC/git integration: we save no experiments and write no dvc.yaml
    (the plots are declared in ours), and that integration asks git for HEAD, which fails in a
    repository without commits (e.g. right after `git init; dvc init`). Imported here, not at
    the top, so that training without curves (library use, a GPU box without dvc) needs no dvclive."""
    os.environ.setdefault("DVCLIVE_LOGLEVEL", "WARNING")
    from dvclive import Live

    class PlotsOnlyLive(Live):
        def _init_dvc(self) -> None:
            self._dvc_file = None

    return PlotsOnlyLive(out_dir, dvcyaml=False, save_dvc_exp=False, report=None)


class Tracker:
    """`log(step, **metrics)` to DVCLive and to `history` (a list of plain dicts)."""

    def __init__(self, out_dir: str | os.PathLike | None, history: list[dict[str, Any]] | None = None):
        self.history: list[dict[str, Any]] = []
        self.live = None
        if out_dir is not None:
            shutil.rmtree(out_dir, ignore_errors=True)  # a fresh folder: no rows from an older run
            Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
            self.live = _plots_only_live(str(out_dir))
        for record in history or []:
            record = dict(record)
            self.log(record.pop("step"), **record)

    def log(self, step: int, **metrics: float) -> None:
        self.history.append({"step": int(step), **{k: float(v) for k, v in metrics.items()}})
        if self.live is not None:
            self.live.step = int(step)
            for name, value in metrics.items():
                self.live.log_metric(name, float(value))
            self.live.next_step()

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
