"""A release: the synthetic cohort with what a data custodian hands to an ethics board and
then to the public (report, datasheet, model card, disclosure risk with attribute inference,
SHA-256 manifest), or a refusal naming the failed check. `healthgym release` is the command;
docs/release.md describes the bundle. The names below load their modules when first used,
so the command starts without them."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MAX_MIA": "build",
    "ReleaseRefused": "build",
    "build_release": "build",
    "copied_records": "build",
    "attribute_inference": "attribute",
    "check_manifest": "manifest",
    "write_manifest": "manifest",
}
__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
