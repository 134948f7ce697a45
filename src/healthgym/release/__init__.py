"""A release: the synthetic cohort with what a data custodian hands to an ethics board and
then to the public (report, datasheet, model card, disclosure risk with attribute inference,
SHA-256 manifest), or a refusal naming the failed check. `healthgym release` is the command;
docs/release.md describes the bundle."""

from __future__ import annotations

from .attribute import attribute_inference
from .build import MAX_MIA, ReleaseRefused, build_release, copied_records
from .manifest import check_manifest

__all__ = [
    "MAX_MIA",
    "ReleaseRefused",
    "attribute_inference",
    "build_release",
    "check_manifest",
    "copied_records",
]
