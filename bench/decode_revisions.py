"""Beam-search speed of two revisions of the code on the same trained model, decoded in turn.

    python bench/decode_revisions.py --before REV [--variant lfpp] [--runs 5] [--fresh] [--out PATH]

For a change to the decoding code, where a ratio between two separate runs would mostly
measure the machine's drift. `git archive REV pipeline` is unpacked to a temporary folder; one
worker process imports `pipeline` from there, another from this checkout (its working tree,
uncommitted changes included). Each loads models/recommender/<variant>.pt (with `--fresh`: builds
the variant's model from params.yaml's recommender.model at train.seed instead, for revisions that
save models in other formats; a search's work does not depend on the weights' values, but its
lists then mean nothing) and the test split of data/sequences/<variant> (run `dvc repro` first), and decodes every test user through
`seq2seq.recommend` at params.yaml's beam, top_k, eval_batch, decode_dtype and decode_workers
(read by this checkout's code, so that an older revision's need not know today's keys; one whose
`recommend` has no `workers` decodes a batch at a time), as `evaluate` does. The workers decode in turn, never together (the first alternates by round), `--runs` rounds
after one warm-up round; users/s is the median, the speed-up the median of the rounds' paired
ratios. The result also has each revision's test metrics and how far the lists agree, and each
worker's page faults and peak RSS after its last round.

A module that the revision lacks does not fail to import in its worker: the editable install's
finder hands it this checkout's copy. A worker that needs to know tests for the file in `code`.
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from machine import machine  # noqa: E402
from real_beauty import set_key  # noqa: E402


def decode_settings() -> dict:
    """params.yaml's decoding settings, as this checkout reads them."""
    from pipeline.params import load_params

    cfg = load_params(ROOT / "params.yaml").recommender.train
    return {"beam": cfg.beam, "k": cfg.top_k, "batch_size": cfg.eval_batch, "dtype": cfg.decode_dtype,
            "workers": cfg.decode_workers}


def recommender_params(overrides: dict | None = None):
    """params.yaml's recommender section as the worker's revision reads it, with {"recommender.<key>":
    value} overrides. The section only: the other sections may hold keys the older revision rejects."""
    import yaml

    from pipeline.params import RecommenderParams
    section = yaml.safe_load((ROOT / "params.yaml").read_text())["recommender"]
    for dotted, value in (overrides or {}).items():
        if not dotted.startswith("recommender."):
            sys.exit(f"--set {dotted}: only recommender.* keys are read here")
        set_key(section, dotted.removeprefix("recommender."), value)
    return RecommenderParams(**section)


def process_facts() -> dict:
    """The worker's minor page faults and peak RSS so far."""
    use = resource.getrusage(resource.RUSAGE_SELF)
    return {"minor_faults": use.ru_minflt, "peak_rss_mib": round(use.ru_maxrss / 1024)}


def foreign_modules(code: Path) -> list[str]:
    """`pipeline` modules this worker loaded from outside `code`. The editable install's finder
    resolves a module the revision lacks (one added since) from this checkout: such a worker
    would run today's code on the "before" side without a word."""
    root = (code / "pipeline").resolve()
    return sorted(name for name, mod in sys.modules.items()
                  if (name == "pipeline" or name.startswith("pipeline.")) and getattr(mod, "__file__", None)
                  and root not in Path(mod.__file__).resolve().parents)


def process_at_end(answers: dict[str, list[dict]]) -> dict:
    """Each worker's `process_facts` after its last round."""
    return {k: {f: v[-1][f] for f in ("minor_faults", "peak_rss_mib")} for k, v in answers.items()}


def worker(code: Path, variant: str, out_dir: Path, settings: dict, fresh: bool = False) -> None:
    """Decode all test users once per line read from stdin; answer users/s per line.

    Imports nothing from bench/decode_options.py (whose test_split this repeats): that module puts
    this checkout first on sys.path, and the "before" worker would then decode with today's code."""
    sys.path.insert(0, str(code))
    from pipeline.beam import ItemTrie
    from pipeline.evaluate import load_recommender
    from pipeline.seq2seq import recommend
    # read_examples from pipeline.train works at every revision (it re-exports pipeline/examples.py's)
    from pipeline.train import read_examples, read_items

    if foreign_modules(code):
        sys.exit(f"{code}: pipeline modules loaded from elsewhere: {foreign_modules(code)}")
    if "workers" not in inspect.signature(recommend).parameters:
        settings = {k: v for k, v in settings.items() if k != "workers"}
    seq = ROOT / "data" / "sequences" / variant
    item_idx, tokens = read_items(seq)
    trie, ex = ItemTrie(tokens, item_idx), read_examples(seq / "test.parquet")
    if fresh:
        from pipeline.layout import Layout
        from pipeline.seq2seq import build_for_layout
        rec = recommender_params()
        model = build_for_layout(rec.model, Layout.load(seq / "layout.json"), rec.train.seed).eval()
    else:
        model = load_recommender(ROOT / "models" / "recommender" / f"{variant}.pt")
    for _ in sys.stdin:
        t0 = time.perf_counter()
        top, scores = recommend(model, trie, ex.input_ids, **settings)
        rate = len(ex.target) / (time.perf_counter() - t0)
        np.savez(out_dir / "lists.npz", top=top.numpy(), scores=scores.numpy(), target=ex.target)
        print(json.dumps({"users_per_s": rate, "users": len(ex.target), "machine": machine(), **process_facts()}),
              flush=True)


def start(script: str, code: Path, out_dir: Path, args: list[str]) -> subprocess.Popen:
    out_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, script, "--worker", str(code), "--worker-out", str(out_dir), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def round_of(proc: subprocess.Popen) -> dict:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        sys.exit(f"bench worker exited with {proc.wait()}")
    return json.loads(line)


def short_rev(rev: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", rev],
                          check=True, capture_output=True, text=True).stdout.strip()


def paired_rounds(script: str, rev: str, runs: int, args: list[str], out: Path) -> dict[str, list[dict]]:
    """Run `script`'s worker for `rev`'s pipeline/ ("before") and this checkout's ("after"), in turn.

    Each worker writes under out/<name>/ and answers one JSON line per round; the first round
    warms both up and is dropped. Returns each side's answers to the `runs` measured rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        code = Path(tmp) / "code"
        code.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "pipeline"], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
        procs = {"before": start(script, code, out / "before", args), "after": start(script, ROOT, out / "after", args)}
        answers: dict[str, list[dict]] = {k: [] for k in procs}
        for i in range(runs + 1):
            names = list(procs) if i % 2 else list(procs)[::-1]  # alternate who goes first
            for name in names:
                info = round_of(procs[name])
                if i:
                    answers[name].append(info)
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    return answers


def paired_summary(answers: dict[str, list[dict]], key: str) -> dict:
    """Medians of `key` per side and of the rounds' after/before ratios."""
    # The machine's speed drifts between rounds more than a small change moves it: the paired
    # ratio of each round is the figure to read, its median over rounds the summary.
    rates = {k: [a[key] for a in v] for k, v in answers.items()}
    ratios = [a / b for a, b in zip(rates["after"], rates["before"])]
    return {key: {k: round(statistics.median(r), 1) for k, r in rates.items()},
            f"runs_{key}": {k: [round(x, 1) for x in r] for k, r in rates.items()},
            "after_over_before_per_round": [round(r, 3) for r in ratios],
            "after_over_before": round(statistics.median(ratios), 3)}


def revision_parser(out_name: str, runs: int) -> argparse.ArgumentParser:
    """The arguments of a two-revision bench, its workers' hidden ones included."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", help="git revision whose pipeline/ the working tree's is compared with")
    ap.add_argument("--variant", default="lfpp")
    ap.add_argument("--runs", type=int, default=runs)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / out_name)
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--worker-settings", type=json.loads, help=argparse.SUPPRESS)
    return ap


def main() -> None:
    ap = revision_parser("decode_revisions.json", runs=5)
    ap.add_argument("--fresh", action="store_true", help="decode freshly built models instead of the trained one")
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.variant, args.worker_out, args.worker_settings, args.fresh)
    if not args.before:
        ap.error("--before REV is required")
    from decode_options import agreement, rounded_metrics

    rev = short_rev(args.before)
    with tempfile.TemporaryDirectory() as tmp:
        settings = decode_settings()
        answers = paired_rounds(__file__, rev, args.runs, ["--variant", args.variant, "--worker-settings", json.dumps(settings),
                                                           *(["--fresh"] if args.fresh else [])], Path(tmp))
        lists = {k: dict(np.load(Path(tmp) / k / "lists.npz")) for k in answers}
    info = answers["after"][-1]
    result = {
        "what": "beam search users/s of two code revisions on one model, decoded in turn (bench/decode_revisions.py)",
        "date": dt.date.today().isoformat(), "machine": info["machine"], "variant": args.variant,
        "users": info["users"], "runs": args.runs, "settings": settings,
        "model": "fresh weights from params.yaml" if args.fresh else f"models/recommender/{args.variant}.pt",
        "revisions": {"before": rev, "after": "working tree of " + short_rev("HEAD")},
        "test": {k: rounded_metrics(v["top"], v["target"]) for k, v in lists.items()},
        "after_vs_before_lists": agreement((lists["before"]["top"], lists["before"]["scores"]),
                                           (lists["after"]["top"], lists["after"]["scores"])),
        **paired_summary(answers, "users_per_s"),
        "process_at_end": process_at_end(answers),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
