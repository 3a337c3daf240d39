"""`fxp cache ls | clear | prune`: the decode-once image caches (fxp.imcache): what they hold and their size, or
remove them (all, or the least recently used beyond a size)."""
from __future__ import annotations

import time
from pathlib import Path

from fxp import cachedir
from fxp.commands import Parser
from fxp.errors import FxpError


def main(args: list[str]) -> int:
    p = Parser(prog="fxp cache", description="The decode-once image caches that image runs build (data.cache=auto: "
                                             "$FXP_CACHE_DIR, else ~/.cache/fxp/images). ls lists them, newest use "
                                             "first, and unfinished builds; clear removes them all; prune removes the "
                                             "least recently used beyond --max (default $FXP_CACHE_MAX). Both remove "
                                             "what killed builds left. Caches are rebuilt when next needed.")
    p.add_argument("action", choices=("ls", "clear", "prune"))
    p.add_argument("--dir", help="a cache folder given as data.cache=DIR (default: the auto one)")
    p.add_argument("--max", help="prune: the size to keep the folder under, e.g. 2G (default: $FXP_CACHE_MAX)")
    a = p.parse_args(args)
    folder = Path(a.dir).expanduser().resolve() if a.dir else cachedir.root()
    if a.action == "prune":
        return prune(folder, max_bytes(a.max))
    return ls(folder) if a.action == "ls" else clear(folder)


def ls(folder: Path) -> int:
    rows, half = cachedir.entries(folder), cachedir.unfinished(folder)
    print(f"{folder}: {len(rows)} cache(s), {mb(sum(r['bytes'] for r in rows))}" +
          (f"; {len(half)} unfinished, {mb(sum(u['bytes'] for u in half))}" if half else ""))
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["used"]))
        print(f"  {Path(r['path']).name}  {r['split']:<5}  {r['n']:>7} items  {mb(r['bytes']):>10}  used {used}  "
              f"{r.get('source', '')}")
    for u in half:
        state = "being built" if u["alive"] else "left by a killed build (clear or prune removes it)"
        print(f"  {Path(u['path']).name}  unfinished  {mb(u['bytes']):>10}  pid {u['pid']} {state}")
    return 0


def clear(folder: Path) -> int:
    print(f"{folder}: {removed(cachedir.clear(folder))}")
    return 0


def prune(folder: Path, limit: int | None) -> int:
    gone = cachedir.prune(folder, limit)
    left = sum(r["bytes"] for r in cachedir.entries(folder))
    print(f"{folder}: {removed(gone)}; {mb(left)} kept" + (f" (at most {mb(limit)})" if limit is not None else
                                                             " (no size given: --max or FXP_CACHE_MAX)"))
    return 0


def max_bytes(text: str | None) -> int | None:
    if text is None:
        return cachedir.limit()
    try:
        return cachedir.size(text)
    except ValueError:
        raise FxpError(f"--max {text!r} is not a size; give bytes or a number with K, M, G or T, e.g. --max 2G") \
            from None


def removed(gone: dict) -> str:
    half = f" and {gone['unfinished']} unfinished" if gone["unfinished"] else ""
    return f"removed {gone['entries']} cache(s){half}, {mb(gone['bytes'])} freed"


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
