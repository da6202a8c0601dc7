"""`dvc repro` on a copy of the repo: runs every stage, caches, reruns only what changed."""
from __future__ import annotations

import ast
import inspect
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


def dvc(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1", **(env or {})}
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


# Put on PYTHONPATH, this makes every `mgr` process append the pipeline modules it loaded to $MGR_TRACE.
TRACER = """
import atexit, json, os, sys

def _log():
    if os.path.basename(sys.argv[0]) != "mgr":
        return
    names = sorted(n for n, m in list(sys.modules.items()) if n.startswith("pipeline.") and hasattr(m, "__file__"))
    with open(os.environ["MGR_TRACE"], "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "modules": names}) + "\\n")

if os.environ.get("MGR_TRACE"):
    atexit.register(_log)
"""
# Loaded by every stage, and left out of deps on purpose (dvc.yaml's header): the params schema
# (synthetic.py holds the generate section's), atomic writes, the error type.
PLUMBING = {"pipeline/params.py", "pipeline/synthetic.py", "pipeline/artifacts.py", "pipeline/errors.py"}
# What `mgr` loads before any command runs, besides the plumbing: `mgr download --help` lists the
# datasets. No stage that dvc runs downloads anything.
CLI = {"pipeline/download.py", "pipeline/fetch.py"}


def traced_env(tmp: Path) -> dict[str, str]:
    (tmp / "tracer").mkdir()
    (tmp / "tracer" / "sitecustomize.py").write_text(TRACER)
    path = os.pathsep.join(filter(None, [str(tmp / "tracer"), os.environ.get("PYTHONPATH")]))
    return {"PYTHONPATH": path, "MGR_TRACE": str(tmp / "modules.jsonl")}


def as_paths(modules) -> set[str]:
    return {m.replace(".", "/") + ".py" for m in modules}


def uses_options(command) -> bool:
    """Does the command's function (signature included) use a name its module imports from stages/options.py?"""
    module = ast.parse(inspect.getsource(sys.modules[command.__module__]))
    shared = {a.asname or a.name for node in ast.walk(module) if isinstance(node, ast.ImportFrom)
              and node.module == "stages.options" for a in node.names}
    used = {n.id for n in ast.walk(ast.parse(inspect.getsource(command))) if isinstance(n, ast.Name)}
    return bool(shared & used)


def undeclared_modules(project: Path, trace: Path) -> dict[str, list[str]]:
    """Per stage, the pipeline modules its run loaded that dvc.yaml does not list as deps (nor
    plumbing): a change to one of those would leave the stage's outputs stale. Also its own
    stages/ module and stages/options.py if it uses it (every `mgr` call loads all stages/
    modules, so that part is read from the source)."""
    from stages.app import app

    commands = {c.name or c.callback.__name__: c.callback for c in app.registered_commands}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    by_cmd = {" ".join(st["cmd"].split()): (name, {d["path"] for d in st.get("deps", [])}) for name, st in lock.items()}
    missing, traced = {}, set()
    for line in trace.read_text().splitlines():
        rec = json.loads(line)
        name, deps = by_cmd[" ".join(["mgr", *rec["argv"]])]
        traced.add(name)
        command = commands[rec["argv"][0]]
        need = as_paths(rec["modules"]) - CLI | as_paths([command.__module__])
        if uses_options(command):
            need.add("stages/options.py")
        if need - deps - PLUMBING:
            missing[name] = sorted(need - deps - PLUMBING)
    assert traced == set(lock), f"stages the tracer missed: {sorted(set(lock) - traced)}"
    return missing


def test_cli_loads_only_plumbing_before_a_command():
    """What `mgr` loads before a command runs is left out of the deps check above, so it must stay small."""
    code = "import sys, stages.app; print(' '.join(n for n in sys.modules if n.startswith('pipeline.')))"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert as_paths(res.stdout.split()) <= PLUMBING | CLI


def artifact_hashes(project: Path) -> dict[str, str]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])
            if not o["path"].startswith("metrics/")}


@pytest.mark.slow
def test_repro_caches_and_reruns_only_what_changed(project: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trace")
    out = dvc(project, "repro", env=traced_env(tmp))
    assert undeclared_modules(project, tmp / "modules.jsonl") == {}
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
