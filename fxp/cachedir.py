"""Where the decode-once image cache lives and what its entries are (read by `fxp cache` without importing torch).

An entry is a folder named for its key (fxp.imcache) holding one .npy array per element of an item (image, mask,
label, points) and `meta.json`: the split, the number of items, the folder the images came from, checksums.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

META = "meta.json"


def root(setting: str = "auto") -> Path | None:
    "The folder `data.cache` names: None for off; auto: $FXP_CACHE_DIR, else ($XDG_CACHE_HOME or ~/.cache)/fxp/images."
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting).expanduser().resolve()
    if os.environ.get("FXP_CACHE_DIR"):
        return Path(os.environ["FXP_CACHE_DIR"]).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fxp" / "images"


def entries(folder: Path) -> list[dict]:
    "Each complete entry under `folder`, newest use first: its meta.json fields, `path`, `bytes` and `used` (mtime)."
    out = []
    for d in sorted(folder.iterdir()) if folder.is_dir() else ():
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            continue
        size = sum(f.stat().st_size for f in d.iterdir())
        out.append({**meta, "path": str(d), "bytes": size, "used": (d / META).stat().st_mtime})
    return sorted(out, key=lambda e: -e["used"])


def clear(folder: Path) -> tuple[int, int]:
    "Remove every entry (and half-written ones) under `folder`: (how many, bytes freed)."
    n = freed = 0
    for d in list(folder.iterdir()) if folder.is_dir() else ():
        if d.is_dir() and (d / META).exists() or ".tmp-" in d.name:
            freed += sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n, freed
