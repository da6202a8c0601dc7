from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pipeline.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]


def test_curves_are_written_inside_a_dvc_repo_without_commits(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    (tmp_path / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    monkeypatch.chdir(tmp_path)
    first = Tracker(Path("dvclive/x"))
    first.log(5, **{"train/loss": 2.0})
    first.close()
    resumed = Tracker(Path("dvclive/x"), history=first.history)  # replays the history on resume
    resumed.log(10, **{"train/loss": 1.0})
    resumed.close()
    assert (tmp_path / "dvclive/x/plots/metrics/train/loss.tsv").read_text() == "step\tloss\n5\t2.0\n10\t1.0\n"
    assert not (tmp_path / "dvc.yaml").exists()
