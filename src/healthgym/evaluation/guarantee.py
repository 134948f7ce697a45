"""The formal privacy guarantee of a run, beside the empirical privacy checks.

`privacy.py` measures whether one synthetic cohort leaks to a few attacks; a run trained
with differential privacy (`HealthGym(dp_epsilon=...)`, `models/healthgym/private.py`) also
carries a guarantee, stated in its model.json "privacy" block. `evaluate(...,
guarantee=block)` (and `healthgym evaluate --run RUN`) puts that block in the report:
`metrics["guarantee"]`, a summary row (epsilon spent), notes, and a section of the page.
An empty block ({}) says the run was trained without differential privacy.
"""

from __future__ import annotations

import html
from typing import Any

#: The block's figures shown in the report, in order.
FIGURES = (
    "epsilon_spent", "epsilon", "delta", "accountant", "noise_multiplier", "max_grad_norm",
    "steps", "sample_rate", "patients", "status",
)  # fmt: skip


def guarantee_metrics(block: dict[str, Any]) -> dict[str, Any]:
    """What the report keeps of a privacy block (`metrics["guarantee"]`)."""
    if not block:
        return {"private": False}
    out: dict[str, Any] = {"private": True}
    out |= {k: block.get(k) for k in FIGURES}
    out["covered"] = list(block.get("covered", []))
    out["not_covered"] = list(block.get("not_covered", []))
    return out


def guarantee_notes(block: dict[str, Any]) -> list[str]:
    """One note stating the guarantee (or its absence), one per part it does not cover."""
    if not block:
        return [
            "privacy guarantee: none (the run was trained without differential privacy); the "
            "privacy rows are empirical checks, not a guarantee"
        ]
    spent = block.get("epsilon_spent")
    eps = f"{spent:.3g}" if isinstance(spent, int | float) else f"at most {block.get('epsilon')}"
    lines = [
        f"privacy guarantee: ({eps}, {_num(block.get('delta'))})-differential privacy per "
        f"patient, {block.get('accountant', 'unknown accountant')}; noise multiplier "
        f"{_num(block.get('noise_multiplier'))}, clipping norm {block.get('max_grad_norm')}, "
        f"{block.get('steps')} steps at sample rate {_num(block.get('sample_rate'))}"
    ]
    lines += [f"privacy guarantee does not cover: {n}" for n in block.get("not_covered", [])]
    return lines


def guarantee_html(metrics: dict[str, Any] | None) -> str:
    """The report's "Privacy guarantee" section; empty without a guarantee entry."""
    if not metrics:
        return ""
    if not metrics.get("private"):
        return (
            "<h2>Privacy guarantee</h2><p>None: the run was trained without differential "
            "privacy. The privacy rows above are empirical checks.</p>"
        )
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_num(metrics.get(k)))}</td></tr>"
        for k in FIGURES
    )
    covered = "".join(f"<li>{html.escape(c)}</li>" for c in metrics.get("covered", []))
    missing = "".join(f"<li>{html.escape(c)}</li>" for c in metrics.get("not_covered", []))
    return (
        "<h2>Privacy guarantee</h2>"
        f'<table class="summary">{rows}</table>'
        f"<h3>Covered</h3><ul>{covered}</ul><h3>Not covered</h3><ul>{missing}</ul>"
    )


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)
