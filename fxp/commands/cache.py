"`fxp cache ls | clear`: the decode-once image caches (fxp.imcache) — what they hold and their size, or remove them."
from __future__ import annotations

import time
from pathlib import Path

from fxp import cachedir
from fxp.commands import Parser


def main(args: list[str]) -> int:
    p = Parser(prog="fxp cache", description="The decode-once image caches that image runs build (data.cache=auto: "
                                             "$FXP_CACHE_DIR, else ~/.cache/fxp/images). ls lists them, newest use "
                                             "first; clear removes them all (they are rebuilt when next needed).")
    p.add_argument("action", choices=("ls", "clear"))
    p.add_argument("--dir", help="a cache folder given as data.cache=DIR (default: the auto one)")
    a = p.parse_args(args)
    folder = Path(a.dir).expanduser().resolve() if a.dir else cachedir.root()
    return ls(folder) if a.action == "ls" else clear(folder)


def ls(folder: Path) -> int:
    rows = cachedir.entries(folder)
    print(f"{folder}: {len(rows)} cache(s), {mb(sum(r['bytes'] for r in rows))}")
    for r in rows:
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["used"]))
        print(f"  {Path(r['path']).name}  {r['split']:<5}  {r['n']:>7} items  {mb(r['bytes']):>10}  used {used}  "
              f"{r.get('source', '')}")
    return 0


def clear(folder: Path) -> int:
    n, freed = cachedir.clear(folder)
    print(f"{folder}: removed {n} cache(s), {mb(freed)} freed")
    return 0


def mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"
