"""Column layout of a design matrix: which columns are reals and which form one-hot spans.

The networks only need this much of the schema: the generator picks an output activation per
column group and the critic picks how to embed it. Everything else (names, transforms, labels)
belongs to the encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DesignLayout:
    """Reals in [0, 1] at ``real_idx``; one-hot spans ``[start, end)`` (width 2 = binary).

    Every column must be either a real or inside exactly one span, so that each generated
    row is schema-true by construction.
    """

    n_features: int
    real_idx: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        # Accept lists (e.g. straight from JSON) but store tuples so the layout stays hashable.
        object.__setattr__(self, "real_idx", tuple(int(i) for i in self.real_idx))
        object.__setattr__(self, "spans", tuple((int(s), int(e)) for s, e in self.spans))
        if self.n_features < 1:
            raise ValueError(f"n_features must be >= 1, got {self.n_features}")
        owner = [0] * self.n_features
        for i in self.real_idx:
            if not 0 <= i < self.n_features:
                raise ValueError(f"real column {i} outside [0, {self.n_features})")
            owner[i] += 1
        for s, e in self.spans:
            if not 0 <= s < e <= self.n_features or e - s < 2:
                raise ValueError(f"span [{s}, {e}) must lie in [0, {self.n_features}), width >= 2")
            for i in range(s, e):
                owner[i] += 1
        bad = [i for i, n in enumerate(owner) if n != 1]
        if bad:
            raise ValueError(f"columns {bad} must belong to exactly one real or span")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (lists instead of tuples)."""
        return {
            "n_features": self.n_features,
            "real_idx": list(self.real_idx),
            "spans": [list(span) for span in self.spans],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DesignLayout:
        """Inverse of :meth:`to_dict`."""
        return cls(
            n_features=int(d["n_features"]),
            real_idx=tuple(d["real_idx"]),
            spans=tuple(tuple(span) for span in d["spans"]),
        )
