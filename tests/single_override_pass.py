"""The targeted single-override pass of issue 17 ("done when"): every key of `fxp train --cfg job`'s composed config,
each set alone to a bad type, a negative, zero, huge numbers, an empty list and a list of the wrong shape, in a
one-epoch run on the default task. Every case must end with exit 0 or 2 and no traceback (130: a run still training
after --limit seconds, interrupted as Ctrl-C would: a huge epoch count is not an error).

Not a CI test (it trains: about 10 minutes on 2 cores). Run it from the repository root:

    python tests/single_override_pass.py [--limit 60] [--json results.json]
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from conftest import run_fxp

VALUES = {"bad type": "abc", "negative": "-1", "zero": "0", "huge": "1e30", "huge int": "1000000000000",
          "empty list": "[]", "wrong shape": "[1,2,3]"}


def keys() -> list[str]:
    "Every key path (nodes and leaves, list items by index) of the default config, as `fxp train --cfg job` shows it."
    import yaml

    cwd = Path(tempfile.mkdtemp())
    r = run_fxp("train", "--cfg", "job", cwd=cwd)
    assert r.returncode == 0, r

    def walk(node, prefix=""):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for k, v in items:
            yield f"{prefix}{k}"
            yield from walk(v, f"{prefix}{k}.")

    return list(walk(yaml.safe_load(r.stdout)))


def one(key: str, value: str, limit: int) -> tuple[int, bool, str]:
    "Exit code, whether a traceback was shown, the last stderr line of `fxp train trainer.epochs=1 KEY=VALUE`."
    cwd = Path(tempfile.mkdtemp())

    def stop(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(limit)
    try:
        r = run_fxp("train", "trainer.epochs=1", f"{key}={value}", cwd=cwd)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(cwd, ignore_errors=True)
    return r.returncode, "Traceback" in r.stdout + r.stderr, (r.err_lines or [""])[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=60, help="seconds a case may train before it is interrupted")
    p.add_argument("--json", help="write every case's result here")
    args = p.parse_args()
    cases, codes, bad = [], collections.Counter(), []
    start = time.time()
    for key in keys():
        for what, value in VALUES.items():
            code, traceback, line = one(key, value, args.limit)
            cases.append({"key": key, "value": value, "what": what, "exit": code, "traceback": traceback, "line": line})
            codes[code] += 1
            if code not in (0, 2, 130) or traceback:
                bad.append(cases[-1])
            print(f"{code:3} {'TB' if traceback else '  '} {key}={value}  {line[:150]}", flush=True)
    print(f"{len(cases)} cases in {time.time() - start:.0f}s; exit codes {dict(codes)}; "
          f"tracebacks {sum(c['traceback'] for c in cases)}; other exit codes {len(bad)}")
    if args.json:
        Path(args.json).write_text(json.dumps(cases, indent=1))
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
