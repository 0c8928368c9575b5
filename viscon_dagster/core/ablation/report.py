"""The ablation report: which mix wins, by how much, and how sure we are.

From each mix's per-item scores (the same benchmark items, the same target recipe and base, the same scoring
method — checked): accuracy with a 95% bootstrap interval; McNemar's exact test for leaky vs every other mix and
for every mix vs the base (`none`), Holm-corrected over that whole family; the ranking and its Kendall τ against the
paper's; and the gate — leaky beats the base when its accuracy is higher and the corrected p is below `alpha`. With
the gate on, a release whose leaky mix does not beat the base is marked **not recommended** (`report.json`, which
the release card reads: `read_report`).

Written to storage under the report's folder: `report.json`, `report.md`, `accuracy.png`.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

from upath import UPath

from viscon_dagster.core.ablation.mixes import BASE, LEAKY, PAPER_RANK
from viscon_dagster.core.ablation.stats import accuracy, holm, kendall_tau, mcnemar_exact
from viscon_dagster.core.files.atomic import write_bytes_atomic, write_text_atomic

REPORT_JSON, REPORT_MD, PLOT_PNG = "report.json", "report.md", "accuracy.png"


@dataclass
class MixScores:
    """One mix's scored benchmark: per-item correctness keyed by item id, and what produced it."""

    mix: str
    correct: dict[str, bool]
    model: str  # the fine-tuned checkpoint's label (the base's for `none`)
    recipe: str
    base_model: str
    benchmark: str  # benchmark fingerprint
    method: str
    gpu_hours: float | None = None


def _same(scores: dict[str, MixScores], attr: str) -> None:
    values = {m: getattr(s, attr) for m, s in scores.items()}
    if len(set(values.values())) > 1:
        raise ValueError(f"the mixes were not scored alike ({attr} differs: {values}); rematerialize the "
                         "partitions that differ")


def build_report(scores: dict[str, MixScores], *, resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                 gate: bool = True) -> dict[str, Any]:
    if len(scores) < 2:
        raise ValueError(f"an ablation compares at least two mixes; scored: {sorted(scores)}")
    for attr in ("recipe", "base_model", "benchmark", "method"):
        _same(scores, attr)
    items = sorted(next(iter(scores.values())).correct)
    for m, s in scores.items():
        if sorted(s.correct) != items:
            raise ValueError(f"mix {m!r} was scored on other items than the others: rematerialize its mix_benchmark")
    vectors = {m: [s.correct[i] for i in items] for m, s in scores.items()}
    acc = {m: accuracy(v, resamples, seed) for m, v in vectors.items()}
    mixes = sorted(scores, key=lambda m: (-acc[m].value, m))
    pairs = [(LEAKY, m) for m in mixes if LEAKY in scores and m != LEAKY]
    pairs += [(m, BASE) for m in mixes if BASE in scores and m not in (BASE, LEAKY)]
    tests = [mcnemar_exact(vectors[a], vectors[b]) for a, b in pairs]
    adjusted = holm([t.p_value for t in tests])
    comparisons = [{"a": a, "b": b, "a_accuracy": acc[a].value, "b_accuracy": acc[b].value,
                    "difference": acc[a].value - acc[b].value, "a_only": t.a_only, "b_only": t.b_only,
                    "p_value": t.p_value, "p_holm": p, "significant": p < alpha}
                   for (a, b), t, p in zip(pairs, tests, adjusted)]
    tau, tau_mixes = kendall_tau({m: acc[m].value for m in mixes}, PAPER_RANK)
    first = next(iter(scores.values()))
    return {
        "items": len(items), "benchmark": first.benchmark, "recipe": first.recipe, "base_model": first.base_model,
        "method": first.method, "alpha": alpha, "resamples": resamples, "seed": seed,
        "ranking": mixes,
        "mixes": {m: {"accuracy": acc[m].value, "ci_low": acc[m].low, "ci_high": acc[m].high,
                      "correct": acc[m].correct, "n": acc[m].n, "model": scores[m].model,
                      "gpu_hours": scores[m].gpu_hours} for m in mixes},
        "comparisons": comparisons,
        "kendall_tau": tau, "kendall_mixes": tau_mixes,
        "gate": gate_verdict(comparisons, acc, enabled=gate, alpha=alpha),
    }


def gate_verdict(comparisons: list[dict], acc: dict, *, enabled: bool, alpha: float) -> dict[str, Any]:
    leaky_vs_base = next((c for c in comparisons if c["a"] == LEAKY and c["b"] == BASE), None)
    if leaky_vs_base is None:
        return {"enabled": enabled, "leaky_beats_base": None, "recommended": None,
                "reason": f"needs both {LEAKY!r} and {BASE!r} scored (have: {sorted(acc)})"}
    beats = leaky_vs_base["difference"] > 0 and leaky_vs_base["p_holm"] < alpha
    how = (f"leaky {leaky_vs_base['a_accuracy']:.1%} vs base {leaky_vs_base['b_accuracy']:.1%}, "
           f"McNemar Holm p = {leaky_vs_base['p_holm']:.3g}")
    reason = f"leaky beats the base ({how})" if beats else f"leaky does not beat the base ({how}; alpha {alpha})"
    return {"enabled": enabled, "leaky_beats_base": beats, "recommended": beats if enabled else None,
            "reason": reason}


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def report_markdown(report: dict[str, Any], title: str = "Ablation") -> str:
    mixes = report["mixes"]
    vs = {(c["a"], c["b"]): c for c in report["comparisons"]}
    lines = [f"**{title}**: {len(mixes)} mixes, target `{report['recipe']}` on `{report['base_model']}`, "
             f"{report['items']} benchmark items (`{report['benchmark']}`), scored by {report['method']}.", "",
             "| rank | mix | accuracy | 95% CI | vs base (Holm p) | vs leaky (Holm p) | GPU h |",
             "|---|---|---|---|---|---|---|"]
    for rank, m in enumerate(report["ranking"], 1):
        a = mixes[m]
        base, leaky = vs.get((m, BASE)), vs.get((LEAKY, m))  # (leaky, none) is both
        base_cell = f"{base['difference']:+.1%} ({_p(base['p_holm'])})" if base else "—"
        leaky_cell = f"{-leaky['difference']:+.1%} ({_p(leaky['p_holm'])})" if leaky else "—"
        gpu = "—" if a["gpu_hours"] is None else f"{a['gpu_hours']:.2f}"
        lines.append(f"| {rank} | `{m}` | {a['accuracy']:.1%} | {a['ci_low']:.1%}–{a['ci_high']:.1%} | "
                     f"{base_cell} | {leaky_cell} | {gpu} |")
    tau = report["kendall_tau"]
    lines += ["", f"Kendall τ vs the paper's ordering: {'n/a' if tau is None else f'{tau:+.2f}'} "
                  f"(over {report['kendall_mixes']} mixes; docs/ablation.md)."]
    gate = report["gate"]
    verdict = {True: "**recommended**", False: "**not recommended**", None: "no verdict"}[gate["recommended"]]
    lines.append(f"Gate ({'on' if gate['enabled'] else 'off'}): {verdict} — {gate['reason']}.")
    return "\n".join(lines)


def plot_png(report: dict[str, Any]) -> bytes:
    """Accuracy per mix with its 95% interval (matplotlib, headless), the base as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mixes = report["ranking"]
    acc = [report["mixes"][m]["accuracy"] for m in mixes]
    err = [[a - report["mixes"][m]["ci_low"] for m, a in zip(mixes, acc)],
           [report["mixes"][m]["ci_high"] - a for m, a in zip(mixes, acc)]]
    fig, ax = plt.subplots(figsize=(1.2 * len(mixes) + 2, 3.2), dpi=100)
    colors = ["#d62728" if m == LEAKY else "#7f7f7f" if m == BASE else "#1f77b4" for m in mixes]
    ax.bar(mixes, acc, yerr=err, capsize=4, color=colors)
    if BASE in report["mixes"]:
        ax.axhline(report["mixes"][BASE]["accuracy"], color="#7f7f7f", linestyle="--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy (95% CI)")
    ax.set_title(f"{report['items']} items, {report['recipe']}")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_report(folder: UPath, report: dict[str, Any], markdown: str, png: bytes) -> None:
    """The plot and the table first, `report.json` last: a reader that finds the json finds the rest."""
    write_bytes_atomic(folder / PLOT_PNG, png)
    write_text_atomic(folder / REPORT_MD, markdown + "\n")
    write_text_atomic(folder / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")


def read_report(folder: UPath) -> dict[str, Any] | None:
    """The last ablation report written to `folder` (None when there is none): what the release card reads."""
    try:
        return json.loads((folder / REPORT_JSON).read_text())
    except FileNotFoundError:
        return None


def _measured_on(report: dict[str, Any]) -> str:
    version = (report.get("release") or {}).get("version")
    return f"release version `{version}`" if version else "the chain's conversations (no release was current)"


def card_banner(report: dict[str, Any]) -> str:
    """A notice under the card's title when the gate is on and leaky did not beat the base; empty otherwise."""
    gate = report["gate"]
    if not (gate["enabled"] and gate["recommended"] is False):
        return ""
    return (f"\n> **Not recommended**: in this project's ablation (measured on {_measured_on(report)}), "
            f"{gate['reason']}. See *Ablation* below.\n")


def card_section(report: dict[str, Any], markdown: str | None = None) -> str:
    """The release card's ablation section: the verdict first (a gated release that failed says so), the table."""
    gate = report["gate"]
    head = (f"## Ablation: which mix trains the better model\n\nMeasured on {_measured_on(report)} by the "
            "`ablation_report` asset (docs/ablation.md): the same target fine-tuned on each mix, scored on a held-out "
            "benchmark.")
    if gate["enabled"] and gate["recommended"] is False:
        head += "\n\n> **Not recommended**: " + gate["reason"] + "."
    return "\n\n".join([head, markdown or report_markdown(report)]) + "\n"


def preview_html(report: dict[str, Any]) -> str:
    """The preview's ablation section: the verdict and the accuracy table (every value escaped)."""
    from html import escape

    gate = report["gate"]
    verdict = {True: "recommended", False: "NOT RECOMMENDED", None: "no verdict"}[gate["recommended"]]
    rows = "".join(f"<tr><td>{rank}</td><td>{escape(m)}</td><td>{a['accuracy']:.1%}</td>"
                   f"<td>{a['ci_low']:.1%}–{a['ci_high']:.1%}</td></tr>"
                   for rank, (m, a) in enumerate(((m, report["mixes"][m]) for m in report["ranking"]), 1))
    return (f"<h2>ablation</h2><p>measured on {escape(_measured_on(report).replace('`', ''))}: "
            f"<strong>{verdict}</strong> — {escape(gate['reason'])}; {report['items']} items, target "
            f"{escape(report['recipe'])}</p><table><tr><th>rank</th><th>mix</th><th>accuracy</th><th>95% CI</th></tr>"
            f"{rows}</table>")
