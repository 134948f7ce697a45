"""Requested static values: validated, encoded, and matched against generated candidates.

`sample(conditions={"Gender": "Female"})` and `sample(static=df)` both become a request frame
(one row per wanted patient, one column per conditioned static variable, values as the
schema's levels, floats for reals, None/NaN for "missing" on `missing: flag` variables).
A request naming every static variable is fed to the generator as it is; a partial one is
met by rejection (see `HealthGymGAN.sample`), and `matches` says which candidates qualify.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data.cohort import level_codes
from ..data.schema import Schema
from ..training.seeding import check_seed, fresh_seed
from .encoding import MAX_STEPS, Column, Encoder

#: Command-line words for "missing" (a level spelled the same way wins).
MISSING_WORDS = ("nan", "NaN", "NA", "None")


def request_frame(
    encoder: Encoder,
    n: int | None,
    conditions: dict[str, Any] | None,
    static: pd.DataFrame | None,
) -> tuple[int, pd.DataFrame | None]:
    """(number of patients, validated request frame or None for unconditional sampling)."""
    if conditions is not None and static is not None:
        raise ValueError("give conditions= (the same for every patient) or static=, not both")
    if static is not None:
        if not isinstance(static, pd.DataFrame) or len(static) == 0 or static.shape[1] == 0:
            raise ValueError("static= must be a non-empty DataFrame, one row per wanted patient")
        if n is not None and n != len(static):
            raise ValueError(f"n={n} but static= has {len(static)} rows (one per patient)")
        frame = static.reset_index(drop=True)
    else:
        if n is None:
            raise ValueError("give n, the number of patients (or static=, one row per patient)")
        if not conditions:
            return n, None
        frame = pd.DataFrame({k: pd.Series([v] * n, dtype=object) for k, v in conditions.items()})
    _check_columns(encoder.schema, list(frame.columns))
    return len(frame), pd.DataFrame({c: _checked_values(encoder, c, frame[c]) for c in frame})


def sampling_request(
    encoder: Any,
    n: int | None,
    conditions: dict[str, Any] | None,
    static: pd.DataFrame | None,
    length: int | None,
    batch_size: int,
    seed: int | None,
    max_length: int | None = None,
) -> tuple[int, pd.DataFrame | None, int]:
    """Checked sampling arguments -> (patients, request frame or None, seed).

    `length` must lie in 1..`max_length` (no upper bound when None); a None seed is drawn.
    """
    if n is not None and (not isinstance(n, int | np.integer) or n < 1):
        raise ValueError(f"n must be a positive number of patients, got {n!r}")
    n, frame = request_frame(encoder, n, conditions, static)
    if length is not None and not 1 <= int(length) <= (max_length or MAX_STEPS):
        raise ValueError(f"length must lie in 1..{max_length or MAX_STEPS}, got {length}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seed = fresh_seed() if seed is None else seed
    check_seed(seed)
    return n, frame, seed


def _check_columns(schema: Schema, columns: list[Any]) -> None:
    statics = [v.name for v in schema.static]
    dynamic = [c for c in columns if c in schema and not schema[c].is_static]
    if dynamic:
        raise ValueError(
            f"cannot condition on dynamic variables {dynamic}: only static variables are "
            f"drawn once per patient; the static variables are {statics}"
        )
    unknown = [c for c in columns if c not in schema]
    if unknown:
        raise ValueError(f"unknown static variables {unknown}; the static variables are {statics}")


def _checked_values(encoder: Encoder, name: str, values: pd.Series) -> pd.Series:
    """The requested values of one variable as the schema's own values (None = missing)."""
    v = encoder.schema[name]
    missing = values.isna().to_numpy()
    if missing.any() and v.missing != "flag":
        raise ValueError(
            f"{name!r} cannot be missing (its schema says missing: none); "
            f"give {'a number' if v.kind == 'real' else f'one of {v.levels}'}"
        )
    if v.kind == "real":
        x = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
        bad = ~missing & np.isnan(x)
        if bad.any():
            raise ValueError(f"{name!r} is real; got non-numbers {values[bad].unique().tolist()}")
        col = _column(encoder, name)
        outside = ~missing & ((x < col.xmin) | (x > col.xmax))
        if outside.any():
            raise ValueError(
                f"{name!r} = {np.unique(x[outside]).tolist()} lies outside the training range "
                f"[{col.xmin:g}, {col.xmax:g}]"
            )
        return pd.Series(x)
    codes = level_codes(values, v.levels)
    bad = ~missing & (codes < 0)
    if bad.any():
        raise ValueError(
            f"{name!r} has no level {values[bad].unique().tolist()}; its levels are {v.levels}"
        )
    return pd.Series(np.asarray(v.levels + [None], dtype=object)[codes], dtype=object)


def parse_condition(schema: Schema, text: str) -> tuple[str, Any]:
    """`COL=VALUE` from the command line -> (COL, VALUE as the level's type or a float).

    VALUE matches a level by its text (`1` -> the integer level 1); the words in
    MISSING_WORDS mean missing (an empty VALUE is an error: it is too easily a typo).
    Unknown columns and levels are reported by `request_frame`.
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"--condition takes COL=VALUE, got {text!r}")
    if not raw.strip():
        raise ValueError(f"--condition {name}= has no value: give one, or {name}=NA for missing")
    if name not in schema:
        return name, raw
    v = schema[name]
    if v.kind != "real":
        by_text = {str(level): level for level in v.levels}
        return name, by_text.get(raw, None if raw in MISSING_WORDS else raw)
    if raw in MISSING_WORDS:
        return name, None
    try:
        return name, float(raw)
    except ValueError:
        return name, raw  # reported as a non-number by request_frame


def _column(encoder: Encoder, name: str) -> Column:
    return next(c for c in encoder.static_columns if c.name == name)


def encode_request(encoder: Encoder, frame: pd.DataFrame) -> np.ndarray:
    """(n, S) static block of the request; unrequested variables hold their training fill."""
    full = pd.DataFrame(
        {
            c.name: frame[c.name] if c.name in frame else pd.Series([c.fill] * len(frame))
            for c in encoder.static_columns
            if c.flag_of is None
        }
    )
    out = np.zeros((len(frame), encoder.n_static))
    encoder._encode_block(full, None, encoder.static_columns, out)  # noqa: SLF001 (one block)
    return out


def requested_columns(encoder: Encoder, frame: pd.DataFrame) -> list[Column]:
    """The static columns a request fixes: each requested variable and its missing flag."""
    return [c for c in encoder.static_columns if c.name in frame or (c.flag_of or "") in frame]


def matches(
    columns: list[Column], candidates: np.ndarray, target: np.ndarray, tolerance: float
) -> np.ndarray:
    """(m,) True where a candidate static row (m, S) decodes to the request row (S,).

    Spans must have the same argmax, reals lie within `tolerance` on the [0, 1] scale; a
    variable requested as missing only needs its flag to say missing.
    """
    ok = np.ones(len(candidates), dtype=bool)
    flags = [c for c in columns if c.flag_of is not None]
    wanted_missing = {c.flag_of for c in flags if target[c.start] > target[c.start + 1]}
    for c in columns:
        if c.name in wanted_missing:
            continue
        got, want = candidates[:, c.start : c.end], target[c.start : c.end]
        if c.kind == "real":
            ok &= np.abs(got[:, 0] - want[0]) <= tolerance
        else:
            ok &= got.argmax(axis=1) == want.argmax()
    return ok
