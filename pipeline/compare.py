"""The comparison across models: every model's test metrics in one table, with lfpp's gain.

Kept apart from pipeline/evaluate.py so that the compare stage, which only reads JSON, loads
neither torch nor transformers (`mgr compare` took 7.6 s with them, 0.7 s without) and depends
on none of the decoding code.
"""
from __future__ import annotations

UNIMODAL = ("text", "image")
METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10", "mrr")


def comparison(results: dict[str, dict[str, float]]) -> tuple[dict[str, dict[str, float]], str]:
    """`metrics/eval.json` content and the markdown table, with lfpp's gain over the best unimodal."""
    table = {name: {m: round(float(r[m]), 4) for m in METRICS} for name, r in results.items()}
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, r in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[m]:.4f}" for m in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    uni = [u for u in UNIMODAL if u in table]
    if "lfpp" in table and uni:
        text += "\nRelative gain of lfpp over the best unimodal variant (per metric):\n\n"
        for m in METRICS:
            best = max(uni, key=lambda u: table[u][m])
            base = table[best][m]
            gain = (table["lfpp"][m] / base - 1.0) * 100 if base > 0 else float("nan")
            text += f"- {m}: {gain:+.1f}% (best unimodal: {best}, {base:.4f})\n"
    return table, text
