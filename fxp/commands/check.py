"""`fxp check OVERRIDES...`: the ten-second pre-flight of a run (fxp.preflight) and the data doctor (fxp.doctor), in
outputs/check/<task>/<stamp>/ (check.json, report.txt); a table of what passed; exit 0, or 1 naming what failed."""
from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path

from fxp.commands import Parser
from fxp.doctor import MIN_PER_CLASS

DEFAULT_STEPS, DEFAULT_FALL = 50, 0.9


def parser() -> Parser:
    p = Parser(prog="fxp check", description="Before a run: compose and validate the config as fxp train does, build "
               "the data, run one training and one validation batch of each step through the real learner, export, "
               "reload and predict two items; and the data doctor. Writes outputs/check/<task>/<stamp>/.")
    p.add_argument("overrides", nargs="*", default=[], metavar="KEY=VALUE", help="fxp train's overrides")
    p.add_argument("--data", action="store_true", help="only the data doctor (no model is built)")
    p.add_argument("--overfit", action="store_true", help="also train one fixed batch for --steps steps: passes when "
                                                          "the loss falls by --fall")
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"overfit steps (default {DEFAULT_STEPS})")
    p.add_argument("--fall", type=float, default=DEFAULT_FALL,
                   help=f"the share the overfit loss must fall by (default {DEFAULT_FALL})")
    p.add_argument("--min-per-class", type=int, default=MIN_PER_CLASS, metavar="N",
                   help=f"a class with fewer training items is an error (default {MIN_PER_CLASS})")
    p.add_argument("--dir", default="outputs/check", help="where the check folders go (default outputs/check)")
    return p


def main(args: list[str]) -> int:
    from fxp.errors import FxpError

    a = parser().parse_intermixed_args(args)
    if a.steps < 1 or not 0 < a.fall < 1 or a.min_per_class < 0:
        raise FxpError("fxp check: --steps takes a whole number >= 1, --fall a share between 0 and 1 (0.9: to a "
                       "tenth), --min-per-class a whole number >= 0")
    cfg, task = composed(a.overrides)
    dest = Path(a.dir) / task / f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"
    from fxp import preflight  # torch and fastai load here, once the config is good

    dest = dest.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    out = preflight.run(cfg, dest, data_only=a.data, min_per_class=a.min_per_class,
                        overfit={"steps": a.steps, "fall": a.fall} if a.overfit else None)
    out.update(task=task, overrides=a.overrides, seconds=round(time.perf_counter() - t0, 3))
    return reported(out, dest)


def composed(overrides: list[str]):
    "The validated config of `overrides` (fxp train's pre-check: one line for bad input) and the task's name."
    from omegaconf import open_dict

    from fxp import config
    from fxp.precheck import compose, precheck

    config.register()
    overrides = precheck(overrides)
    cfg = compose(overrides, hydra=True)
    task = cfg.hydra.runtime.choices.get("task") or cfg.task.kind
    with open_dict(cfg):
        del cfg["hydra"]
    return config.validate(cfg, overrides), task


def reported(out: dict, dest: Path) -> int:
    "The table and findings printed and written (report.txt, check.json); 1 if a piece failed or a finding is an error."
    from fxp.console import console
    from fxp.doctor import ERROR, Finding
    from fxp.writer import write_atomic

    errors = [f for f in out["findings"] if f["level"] == ERROR]
    failed = next((r for r in out["pieces"] if r["ok"] is False and not r["piece"].startswith("data doctor")), None)
    out["passed"] = failed is None and not errors
    write_atomic(dest / "check.json", json.dumps(out, indent=1, default=str))
    text = report_text(out, dest)
    write_atomic(dest / "report.txt", text)
    console().print(text, end="", soft_wrap=True)
    if failed:
        print(f"fxp: check failed at {failed['piece']}: {failed['detail']} (details in {dest})", file=sys.stderr)
    elif errors:
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        print(f"fxp: check failed at the data doctor: {Finding(**errors[0]).line()}{more}; all in "
              f"{dest / 'report.txt'}", file=sys.stderr)
    return 0 if out["passed"] else 1


def report_text(out: dict, dest: Path) -> str:
    "What report.txt holds and the terminal shows: the pieces, the counts, the findings, the verdict."
    from fxp.doctor import Finding

    width = max(len(r["piece"]) for r in out["pieces"]) if out["pieces"] else 5
    lines = [f"fxp check {' '.join(out['overrides'])}".rstrip(), ""]
    lines += [f"{'ok' if r['ok'] else 'FAIL':4}  {r['piece']:<{width}}  {r['seconds']:6.2f}s  {r['detail']}".rstrip()
              for r in out["pieces"]]
    for step, counts in out["counts"].items():
        classes = counts.get("classes", {})
        per = "; ".join(f"{split}: " + ", ".join(f"{c} {n}" for c, n in list(cs.items())[:12])
                        + (f" ... ({len(cs)} classes)" if len(cs) > 12 else "") for split, cs in classes.items())
        lines += ["", f"data ({step}): {counts['train']} train, {counts['valid']} valid" + (f"; {per}" if per else "")]
    if out["findings"]:
        lines += [""] + [f"{f['level']}: {Finding(**f).line()}" for f in out["findings"]]
    verdict = "passed" if out["passed"] else "FAILED"
    lines += ["", f"{verdict} in {out['seconds']:.1f}s; check.json and report.txt in {dest}"]
    return "\n".join(lines) + "\n"
