"""`dvc repro` on a copy of the repo: runs every stage, caches, reruns only what changed."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def dvc(cwd: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout + res.stderr


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name in ("dvc.yaml", "params.yaml", "pipeline", "stages", "notebooks"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / ".dvc").mkdir()
    shutil.copy(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["generate"].update(n_users=300, n_types=4, n_styles=3, items_per_cell=4)  # tiny: the check is about caching
    for section in params["quantize"].values():
        section.update(codebook_size=8, hidden=[32], code_dim=8, epochs=20, batch_size=32, reseed_every=5)
    params["recommender"]["model"].update(encoder_layers=1, decoder_layers=1, d_model=16, heads=2, d_kv=8, d_ff=32)
    params["recommender"]["train"].update(max_epochs=2, eval_users=0, batch_size=128, checkpoint_every=1000)
    params["variants"]["lfpp"]["align"]["epochs"] = 1
    params["sasrec"].update(epochs=2, hidden=16)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def run_notebooks(project: Path) -> None:
    """Execute the notebooks on the tiny run's artifacts; a failing cell raises."""
    import nbformat
    from nbclient import NotebookClient

    for path in sorted((project / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, (path.name, errors)


def artifact_hashes(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])
            if not o["path"].startswith("metrics/")}


@pytest.mark.slow
def test_repro_caches_and_reruns_only_what_changed(project: Path):
    out = dvc(project, "repro")
    for stage in ("generate", "ingest", "embed@text", "embed@image", "embed_fused", "quantize@text",
                  "quantize@image", "quantize@fused", "agreement"):
        assert f"Running stage '{stage}'" in out
    for name in ("items.parquet", "interactions.parquet", "splits.parquet", "ingest_report.json"):
        assert (project / "data" / "ingested" / name).is_file()
    assert "quantize_text.json" in dvc(project, "metrics", "show")
    for stage in ("sequences@lfpp", "train@text", "train@lfpp", "evaluate@fused", "sasrec", "compare"):
        assert f"Running stage '{stage}'" in out
    table = json.loads((project / "metrics" / "eval.json").read_text())
    assert list(table) == ["text", "image", "fused", "lf", "lfpp", "sasrec"]
    assert all(0 <= v["recall@10"] <= 1 for v in table.values())
    assert "lfpp over the best unimodal" in (project / "reports" / "comparison.md").read_text()
    run_notebooks(project)
    plots = dvc(project, "plots", "show", "--json")
    for name in ("test_recall_at_k", "codebook_usage", "train_loss"):
        assert name in plots

    out = dvc(project, "repro")
    assert "Running stage" not in out
    assert "Data and pipelines are up to date" in dvc(project, "status")

    # forced reruns reproduce the outputs byte for byte (same hashes in dvc.lock)
    # (metrics JSON files hold wall times, so they are left out of the comparison)
    lock = artifact_hashes(project)
    dvc(project, "repro", "--force")
    assert artifact_hashes(project) == lock

    # another image encoder: the image branch and what follows rerun, never ingestion or text
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["embed"]["image"]["seed"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert {"embed@image", "embed_fused", "quantize@image", "quantize@fused"} <= ran
    assert not ran & {"generate", "ingest", "embed@text", "quantize@text"}

    # one variant's params: only that variant's chain and the comparison rerun
    params["variants"]["lf"]["transition"] = True
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc(project, "repro")
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"sequences@lf", "train@lf", "evaluate@lf", "compare"}

    params["data"]["min_interactions"] = 6
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(project, "status")
    assert "ingest" in status and "generate" not in status
    out = dvc(project, "repro")
    assert "Running stage 'ingest'" in out and "Running stage 'generate'" not in out
