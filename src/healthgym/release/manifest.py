"""The bundle's manifest: the SHA-256 of every file, as `sha256sum -c MANIFEST.sha256` checks
it and as JSON (`manifest.json`: path, bytes, sha256), so a recipient can tell that nothing
was changed or left out."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

MANIFEST = "MANIFEST.sha256"
MANIFEST_JSON = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> list[dict[str, object]]:
    """Write both manifests of every file under `folder` (themselves excepted)."""
    entries = [
        {"path": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MANIFEST, MANIFEST_JSON)
    ]
    lines = "".join(f"{e['sha256']}  {e['path']}\n" for e in entries)
    (folder / MANIFEST).write_text(lines)
    (folder / MANIFEST_JSON).write_text(json.dumps({"files": entries}, indent=1))
    return entries


def check_manifest(folder: Path) -> list[str]:
    """The files whose content no longer matches MANIFEST.sha256, or that are missing."""
    bad = []
    for line in (folder / MANIFEST).read_text().splitlines():
        digest, name = line.split("  ", 1)
        path = folder / name
        if not path.is_file() or sha256(path) != digest:
            bad.append(name)
    return bad
