"""The `mgr` command as a user meets it: help, one-line fatal errors, exit codes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.amazon_files import make_dataset

MGR = Path(sys.executable).parent / "mgr"


def mgr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    return subprocess.run([str(MGR), *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env)


def test_help_lists_the_stage_commands():
    res = mgr("--help")
    assert res.returncode == 0
    for command in ("generate", "ingest", "download"):
        assert command in res.stdout


def test_fatal_errors_are_one_line_without_traceback(tmp_path):
    res = mgr("ingest", "--reviews", str(tmp_path / "r.json.gz"), "--meta", str(tmp_path / "m.json.gz"),
              "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {tmp_path / 'r.json.gz'}: reviews file not found"

    bad = tmp_path / "params.yaml"
    bad.write_text("data:\n  reviews: r\n  meta: m\n  min_interactions: -1\n")
    res = mgr("ingest", "--params", str(bad), "--out", str(tmp_path / "out"))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        f"error: {bad}: data.min_interactions: Input should be greater than or equal to 1 (got -1)"]

    res = mgr("ingest", "--out", str(tmp_path / "out"))
    assert res.returncode != 0 and "give --reviews and --meta" in res.stderr and "Traceback" not in res.stderr


def test_ingest_command_writes_outputs_and_summary(tmp_path):
    paths = make_dataset(tmp_path)
    res = mgr("ingest", "--reviews", str(paths["reviews"]), "--meta", str(paths["meta"]),
              "--images-dir", str(paths["images_dir"]), "--out", str(tmp_path / "out"), "--min-interactions", "5")
    assert res.returncode == 0, res.stderr
    assert "ingest: 12 users, 8 items, 72 interactions" in res.stderr
    assert (tmp_path / "out" / "splits.parquet").is_file()
