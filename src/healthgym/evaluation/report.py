"""The evaluation report: a summary table with readings, figures, metrics.json and one HTML page.

The page is self-contained (inline CSS, figures as base64 PNG, no scripts, no network), so it
can be mailed or archived next to a released synthetic cohort.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .guarantee import guarantee_html


@dataclass(frozen=True)
class Reading:
    """How to read one summary metric: ideal value and the good/fair cut-offs."""

    label: str
    ideal: float
    good: float
    fair: float
    higher_is_better: bool
    about: str

    def grade(self, value: float | None) -> str:
        if value is None or not math.isfinite(value):
            return "n/a"
        sign = 1 if self.higher_is_better else -1
        if sign * value >= sign * self.good:
            return "good"
        return "fair" if sign * value >= sign * self.fair else "poor"

    def thresholds(self) -> str:
        op = ">=" if self.higher_is_better else "<="
        return f"ideal {self.ideal:g}; good {op} {self.good:g}, fair {op} {self.fair:g}"


#: The simulator fidelity report's figures (`healthgym.rl.fidelity`), each read for the
#: simulator and for its two baselines, which a faithful simulator beats: (metric, label,
#: (ideal, good, fair, higher is better), about). Agreements: of the same sign and within
#: 25% of the observed difference (what if: or within its interval).
SIMULATOR_READINGS = (
    ("one_step_ks_mean", "one-step KS distance", (0, 0.1, 0.2, False),
     "next state drawn from the real history and recorded treatment vs the real next "
     "state, mean over real state variables (pooled: a draw ignoring the history can pass)"),
    ("one_step_skill", "one-step forecast skill", (1, 0.5, 0.25, True),
     "1 - paired |predicted - real next| / the same for a next state drawn at random, mean "
     "over real state variables (0: no better than ignoring the history)"),
    ("next_mean_agreement", "next-step mean differences between treatment levels",
     (1, 0.8, 0.5, True), "share of (variable, level) whose difference of next-step means "
     "from the first level, transitions grouped by the recorded level, agrees with the data"),
    ("next_rate_agreement", "next-step measurement-rate differences between treatment levels",
     (1, 0.8, 0.5, True), "the same for the share of next steps where a variable is measured"),
    ("what_if_agreement", "what-if differences", (1, 0.8, 0.5, True),
     "share of (variable, level) whose difference when every history gets the level instead "
     "of the first agrees with the observed one adjusted for the current state and the "
     "previous treatment, over those the data show (interval excluding 0)"),
)  # fmt: skip

#: Summary rows in display order, keyed by their path in `Report.metrics`. The cut-offs are
#: documented in docs/evaluation.md; readings are rules of thumb, not tests.
READINGS: dict[str, Reading] = {
    "marginals.ks_complement_mean": Reading(
        "marginals: KS complement (reals)", 1, 0.9, 0.8, True,
        "1 - Kolmogorov-Smirnov statistic, mean over real variables",
    ),
    "marginals.tv_complement_mean": Reading(
        "marginals: TV complement (categoricals)", 1, 0.95, 0.9, True,
        "1 - total variation distance of level shares, mean over binary/categorical variables",
    ),
    "marginals.wasserstein_scaled_mean": Reading(
        "marginals: Wasserstein / IQR (reals)", 0, 0.1, 0.25, False,
        "earth mover's distance in units of the real interquartile range",
    ),
    "marginals.missing_rate_diff_mean": Reading(
        "marginals: missing-rate difference", 0, 0.02, 0.05, False,
        "absolute difference of the share of missing values, mean over variables",
    ),
    "associations.mean_abs_diff": Reading(
        "associations: mean |real - synthetic|", 0, 0.05, 0.1, False,
        "Pearson / Cramer's V / correlation ratio matrices over rows",
    ),
    "temporal.autocorrelation_mad": Reading(
        "temporal: lag-k autocorrelation difference", 0, 0.05, 0.15, False,
        "within-patient autocorrelation (reals) and lag agreement (categoricals)",
    ),
    "temporal.trend_corr_mad": Reading(
        "temporal: trend correlation difference", 0, 0.2, 0.4, False,
        "Health Gym dynamic correlations of linear trends, Fisher-z pooled (saturating, noisy)",
    ),
    "temporal.cycle_corr_mad": Reading(
        "temporal: cycle correlation difference", 0, 0.05, 0.15, False,
        "Health Gym dynamic correlations of detrended cycles, Fisher-z pooled",
    ),
    "temporal.transition_tv_mean": Reading(
        "temporal: transition-matrix difference", 0, 0.05, 0.15, False,
        "total variation between next-step level distributions, categoricals",
    ),
    "temporal.length_ks_complement": Reading(
        "temporal: sequence-length KS complement", 1, 0.9, 0.8, True,
        "1 - KS statistic of the number of steps per patient",
    ),
    "temporal.lag1_gap_mean": Reading(
        "trajectories: lag-1 autocorrelation gap", 0, 0.03, 0.08, False,
        "|real - synthetic| lag-1 autocorrelation pooled over patients (rank-scaled reals), "
        "mean over variables: do values persist from step to step?",
    ),
    "temporal.lagk_gap_mean": Reading(
        "trajectories: lag-2..k autocorrelation gap", 0, 0.03, 0.08, False,
        "the same at lags 2..k (`lags`), mean over variables and lags",
    ),
    "temporal.within_lag1_gap_mean": Reading(
        "trajectories: within-patient lag-1 gap", 0, 0.05, 0.12, False,
        "|real - synthetic| lag-1 autocorrelation after removing each patient's mean",
    ),
    "temporal.delta_ks_mean": Reading(
        "trajectories: step-change KS statistic", 0, 0.05, 0.1, False,
        "KS statistic of real vs synthetic changes x_t+1 - x_t, mean over real variables",
    ),
    "temporal.never_change_gap_mean": Reading(
        "trajectories: never-changing patients gap", 0, 0.02, 0.05, False,
        "|real - synthetic| share of patients whose values never change, mean over variables",
    ),
    "temporal.every_change_gap_mean": Reading(
        "trajectories: always-changing patients gap", 0, 0.03, 0.06, False,
        "|real - synthetic| share of patients whose values change at every observed step",
    ),
    "temporal.backwards_share": Reading(
        "trajectories: steps going backwards", 0, 0.001, 0.01, False,
        "share of synthetic steps where a time-like (monotone) variable goes backwards; "
        "real data: 0",
    ),
    "temporal.start_mismatch_share": Reading(
        "trajectories: patients off the common start", 0, 0.001, 0.01, False,
        "share of synthetic patients not starting at the value every real patient starts at",
    ),
    "temporal.lag1_gap_excess": Reading(
        "trajectories: lag-1 gap minus the holdout's", 0, 0.02, 0.05, False,
        "synthetic lag-1 gap minus the real holdout's (<= 0: as close as unseen real patients)",
    ),
    "temporal.within_lag1_gap_excess": Reading(
        "trajectories: within-patient gap minus the holdout's", 0, 0.02, 0.05, False,
        "synthetic within-patient lag-1 gap minus the real holdout's",
    ),
    "structure.static_consistency": Reading(
        "structure: patients with constant statics", 1, 0.99, 0.9, True,
        "share of synthetic patients whose static variables never change",
    ),
    "structure.level_coverage": Reading(
        "structure: level coverage", 1, 0.99, 0.9, True,
        "share of real levels (>= 1% frequency) that synthetic data produces",
    ),
    "structure.joint_static_coverage": Reading(
        "structure: static combination coverage", 1, 0.95, 0.8, True,
        "share of real static-category combinations (>= 1%) present: the mode-collapse check",
    ),
    "row_kinds.unseen_pattern_share": Reading(
        "rows: patterns never in the real table", 0, 0.01, 0.05, False,
        "share of synthetic rows whose pattern (variables held, binary flags) no real row has",
    ),
    "row_kinds.never_together_share": Reading(
        "rows: items never together in real rows", 0, 0.001, 0.01, False,
        "share of synthetic rows holding a pair (present / level) that no real row holds "
        "though independence would put >= 10 real rows there",
    ),
    "row_kinds.terminal_misplaced_share": Reading(
        "rows: last-only (first-only) kinds misplaced", 0, 0.01, 0.05, False,
        "share of synthetic rows of a pattern real stays have only as their last (first) row "
        "that are elsewhere",
    ),
    "row_kinds.per_kind_ks_gap_excess": Reading(
        "rows: pooled minus per-kind KS, minus the holdout's", 0, 0.02, 0.05, False,
        "1 - KS within each row kind (variables held) against pooled over all rows",
    ),
    "utility.auroc_trtr": Reading(
        "utility: AUROC train-real test-real", 1, 0.7, 0.6, True,
        "reference: how predictable the outcome is from real data",
    ),
    "utility.auroc_tstr": Reading(
        "utility: AUROC train-synthetic test-real", 1, 0.7, 0.6, True,
        "the same classifier trained on synthetic patients",
    ),
    "utility.auroc_ratio": Reading(
        "utility: TSTR / TRTR, chance-corrected", 1, 0.8, 0.5, True,
        "(TSTR - 0.5) / (TRTR - 0.5) clipped to [0, 1]: share of real-data skill above chance "
        "kept by training on synthetic data; n/a when TRTR <= 0.5",
    ),
    "privacy.dcr_share": Reading(
        "privacy: DCR share (closer to train)", 0.5, 0.55, 0.65, False,
        "share of synthetic patients nearer to training than to holdout patients (equal-size "
        "subsamples, median over draws); says little when the hub share is high",
    ),
    "privacy.dcr_hub_share": Reading(
        "privacy: DCR hub share", 0, 0.05, 0.2, False,
        "share of synthetic patients whose nearest training patient is the most common one "
        "(hubness; holdout_hub_share is a real population's level)",
    ),
    "privacy.exact_copy_share": Reading(
        "privacy: exact copies of training patients", 0, 0.001, 0.01, False,
        "share of synthetic patients identical to a training patient (features)",
    ),
    "privacy.near_copy_share": Reading(
        "privacy: near copies", 0.01, 0.02, 0.05, False,
        "share nearer to training than 99% of holdout patients are (1% by chance)",
    ),
    "privacy.mia_auroc": Reading(
        "privacy: membership-inference AUROC", 0.5, 0.55, 0.65, False,
        "distance attack telling training from holdout patients (0.5: no leak)",
    ),
    "privacy.row_distance_ratio": Reading(
        "privacy: row distance train / holdout", 1, 0.9, 0.75, True,
        "Health Gym check: median nearest-synthetic-row distance, train vs holdout rows",
    ),
    "guarantee.epsilon_spent": Reading(
        "privacy guarantee: DP epsilon spent per patient", 0, 1, 10, False,
        "the run's differential-privacy budget spent (model.json's privacy block; delta, "
        "accountant and what it covers in the notes); a guarantee, not a measurement",
    ),
    **{
        f"{key}.{metric}": Reading(f"{label}: {what}", *cut, about)
        for key, label in (("simulator", "simulator"),
                           ("treatment_blind", "treatment-blind baseline"),
                           ("history_blind", "history-blind baseline"))
        for metric, what, cut, about in SIMULATOR_READINGS
    },
    "simulator.return_gap": Reading(
        "simulator: behaviour-policy return gap", 0, 0.1, 0.25, False,
        "|simulated - real| / |real| mean return per patient under the recorded care",
    ),
}  # fmt: skip


class Report:
    """Metrics, a summary with plain-language readings, and figures of one evaluation."""

    def __init__(
        self,
        metrics: dict[str, Any],
        figures: dict[str, Figure | bytes],
        captions: dict[str, str] | None = None,
        notes: list[str] | None = None,
    ) -> None:
        self.metrics = metrics
        self.figures = figures
        self.captions = captions or {}
        self.notes = notes or []
        self._png: dict[str, bytes] = {}

    @property
    def summary(self) -> pd.DataFrame:
        """One row per available summary metric: metric, value, reading, about (with cut-offs)."""
        rows = []
        for key, r in READINGS.items():
            value = self.value(key)
            if value is None:
                continue
            rows.append(
                {
                    "key": key,
                    "metric": r.label,
                    "value": value,
                    "reading": r.grade(value),
                    "about": f"{r.about} ({r.thresholds()})",
                }
            )
        return pd.DataFrame(rows, columns=["key", "metric", "value", "reading", "about"])

    def value(self, key: str) -> float | None:
        """A metric by dotted path, e.g. `"privacy.mia_auroc"`; None where not computed."""
        node: Any = self.metrics
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if node is None else float(node)

    def png(self, name: str) -> bytes:
        """A figure as PNG bytes (rendered once)."""
        if name not in self._png:
            fig = self.figures[name]
            if isinstance(fig, bytes):
                self._png[name] = fig
            else:
                buf = io.BytesIO()
                fig.savefig(buf, format="png", dpi=90)
                self._png[name] = buf.getvalue()
        return self._png[name]

    def save(self, directory: str | Path) -> Path:
        """Write index.html, metrics.json and one PNG per figure into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in self.figures:
            (out / f"{name}.png").write_bytes(self.png(name))
        (out / "metrics.json").write_text(json.dumps(to_json(self.metrics), indent=1))
        (out / "index.html").write_text(self.html())
        return out / "index.html"

    def html(self, fragment: bool = False) -> str:
        """The report as one self-contained page (or a fragment for notebooks)."""
        parts = [f"<style>{_CSS}</style>", "<h1>Synthetic cohort evaluation</h1>"]
        cohorts = self.metrics.get("cohorts", {})
        if cohorts:
            items = "".join(
                f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>"
                for k, v in cohorts.items()
            )
            parts.append(f"<ul>{items}</ul>")
        parts += ["<h2>Summary</h2>", self._summary_html()]
        parts.append(guarantee_html(self.metrics.get("guarantee")))
        if self.notes:
            items = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
            parts.append(f"<h2>Notes</h2><ul>{items}</ul>")
        parts.append("<h2>Figures</h2>")
        for name in self.figures:
            data = base64.b64encode(self.png(name)).decode("ascii")
            caption = html.escape(self.captions.get(name, name))
            parts.append(
                f'<figure id="{html.escape(name)}"><img alt="{html.escape(name)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'
            )
        body = "\n".join(parts)
        if fragment:
            return f'<div class="healthgym-report">{body}</div>'
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            "<title>healthgym evaluation</title></head>\n"
            f'<body class="healthgym-report">\n{body}\n</body></html>\n'
        )

    def _repr_html_(self) -> str:
        return self.html(fragment=True)

    def _summary_html(self) -> str:
        head = "<tr><th>metric</th><th>value</th><th>reading</th><th>about</th></tr>"
        rows = [
            f'<tr><td>{html.escape(r.metric)}</td><td class="num">{r.value:.3f}</td>'
            f'<td class="{r.reading}">{r.reading}</td><td>{html.escape(r.about)}</td></tr>'
            for r in self.summary.itertuples()
        ]
        return f'<table class="summary">{head}{"".join(rows)}</table>'


def to_json(value: Any) -> Any:
    """Metrics as plain JSON: numpy to Python, NaN/inf to null, series and frames to dicts."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, pd.Series):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, pd.DataFrame):
        return {"index": to_json(list(value.index)), "values": to_json(value.to_numpy().tolist())}
    if isinstance(value, np.ndarray):
        return to_json(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


_CSS = """
.healthgym-report{font-family:system-ui,sans-serif;max-width:1400px;margin:1em auto;color:#222}
.healthgym-report table.summary{border-collapse:collapse;font-size:14px}
.healthgym-report td,.healthgym-report th{border:1px solid #ccc;padding:3px 8px;text-align:left}
.healthgym-report td.num{text-align:right;font-variant-numeric:tabular-nums}
.healthgym-report td.good{background:#d9f2d9}.healthgym-report td.fair{background:#fff2cc}
.healthgym-report td.poor{background:#f8d0d0}
.healthgym-report img{max-width:100%;border:1px solid #eee}
.healthgym-report figcaption{font-size:13px;color:#555;margin-bottom:1.5em}
"""
