"""Where the decode-once image cache lives and what its entries are (read by `fxp cache` without importing torch).

An entry is a folder named for its key (fxp.imcache) holding one .npy array per element of an item (image, mask,
label, points) and `meta.json`: the split, the number of items, the folder the images came from, checksums. A build
writes `<key>.tmp-<pid>` and renames it into place; a killed build leaves that folder behind (`unfinished`).
$FXP_CACHE_MAX (e.g. 2G) bounds the folder: after each build the least recently used entries go (`prune`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from fxp.errors import FxpError
from fxp.runs import alive

META = "meta.json"
UNFINISHED = re.compile(r"^\w+\.tmp-(\d+)$")  # imcache.build's temp folder: <key>.tmp-<pid>
UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def root(setting: str = "auto") -> Path | None:
    "The folder `data.cache` names: None for off; auto: $FXP_CACHE_DIR, else ($XDG_CACHE_HOME or ~/.cache)/fxp/images."
    if setting == "off":
        return None
    if setting != "auto":
        return Path(setting).expanduser().resolve()
    if os.environ.get("FXP_CACHE_DIR"):
        return Path(os.environ["FXP_CACHE_DIR"]).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fxp" / "images"


def limit() -> int | None:
    "$FXP_CACHE_MAX in bytes (None: no limit); a value that is not a size is one line."
    text = os.environ.get("FXP_CACHE_MAX", "").strip()
    if not text:
        return None
    try:
        return size(text)
    except ValueError:
        raise FxpError(f"FXP_CACHE_MAX={text!r} is not a size; give bytes or a number with K, M, G or T "
                       f"(powers of 1024), e.g. FXP_CACHE_MAX=2G") from None


def size(text: str) -> int:
    "Bytes from '2G', '500M', '1.5g', '300k', '4096' (K, M, G, T: powers of 1024; a trailing B or iB is allowed)."
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(?:i?b)?\s*", text, re.I)
    if not m:
        raise ValueError(text)
    return int(float(m[1]) * UNITS[m[2].lower()])


def entries(folder: Path) -> list[dict]:
    "Each complete entry under `folder`, newest use first: its meta.json fields, `path`, `bytes` and `used` (mtime)."
    out = []
    for d in _children(folder):
        try:
            meta = json.loads((d / META).read_text())
            out.append({**meta, "path": str(d), "bytes": _bytes(d), "used": (d / META).stat().st_mtime})
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda e: -e["used"])


def unfinished(folder: Path) -> list[dict]:
    "Each half-written entry under `folder`: `path`, `pid` (its builder), `alive` (a build under way), `bytes`."
    out = []
    for d in _children(folder):
        m = UNFINISHED.match(d.name)
        if m and d.is_dir():
            out.append({"path": str(d), "pid": int(m[1]), "alive": alive(int(m[1])), "bytes": _bytes(d)})
    return out


def clear(folder: Path) -> dict:
    "Remove every entry under `folder`, and the half-written ones whose build is dead: what went (`prune`'s counts)."
    return _removed(entries(folder), _dead(folder))


def prune(folder: Path, max_bytes: int | None, keep: tuple = ()) -> dict:
    """The half-written entries whose build is dead, then the least recently used entries (but those in `keep`) until
    the folder holds at most `max_bytes` (None: no limit): what went."""
    over, kept = [], {str(k) for k in keep}
    if max_bytes is not None:
        rows = entries(folder)
        total = sum(r["bytes"] for r in rows)
        for r in reversed(rows):  # oldest use first
            if total <= max_bytes:
                break
            if r["path"] not in kept:
                over.append(r)
                total -= r["bytes"]
    return _removed(over, _dead(folder))


def _dead(folder: Path) -> list[dict]:
    return [u for u in unfinished(folder) if not u["alive"]]


def _removed(done: list[dict], half: list[dict]) -> dict:
    "Remove the folders of `done` (entries) and `half` (unfinished ones): how many of each, and the bytes freed."
    for r in (*done, *half):
        shutil.rmtree(r["path"], ignore_errors=True)
    return {"entries": len(done), "unfinished": len(half), "bytes": sum(r["bytes"] for r in (*done, *half))}


def _children(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:  # no cache yet (or not a folder)
        return []


def _bytes(folder: Path) -> int:
    total = 0
    for f in folder.rglob("*"):
        try:
            total += f.stat().st_size if f.is_file() else 0
        except OSError:  # removed meanwhile (another process's build or prune)
            pass
    return total
