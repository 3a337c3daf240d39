"""`fxp reproduce NAME [--seeds N] | --list | --from DIR`: run a course recipe from experiments/ and say whether it got
there.

A preset is a Hydra experiment (`+experiment=NAME`) with a `reproduce:` block: the published metric, its direction,
a tolerance and the source. The verdict compares the run's final-epoch value (the course tables report the last
epoch) with the published one (RULE), and with the run's baseline (what a predictor that never looks at the inputs
reaches: a result that does not beat it is said to, whatever the published value). `--seeds N` runs the preset as a
seed group (fxp.groups) and judges the seeds' mean, saying how many of their standard deviations it lies from the
published value. Light imports: listing and verdicts read YAML and JSON only.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from types import SimpleNamespace

from fxp import config
from fxp.console import console, number
from fxp.errors import FxpError
from fxp.groups import is_group, read_group, spread
from fxp.runs import (
    CONFIG,
    NOT_STARTED,
    SUMMARY,
    baselines,
    not_beaten,
    read_config,
    read_metrics,
    read_run,
    read_summary,
    unreadable,
)

NEEDS = {"gpu": "a CUDA GPU (hours on a CPU)", "pretrained": "pre-trained weights (network)",
         "data": "a dataset that is not downloadable by fastai (data.path=)"}
RULE = ("reached: the run completed and its result is no worse than the published value by more than the tolerance "
        "(a better one counts)")
GROUP_RULE = ("reached: every seed completed and their mean is no worse than the published value by more than the "
              "tolerance (a better one counts)")
USAGE = ("usage: fxp reproduce NAME [--seeds N] [overrides...] | fxp reproduce --list | fxp reproduce --from "
         "RUN_DIR|GROUP_DIR")
HELP = f"""{USAGE}

Run a course recipe (a preset in experiments/) and print a verdict table: the metric it reached at its last epoch
against the published one, and against its baseline. Exit 0 when reached (a completed run no worse than the published
value by more than the tolerance; better counts), 1 when not. With --seeds N, the recipe runs N times (seeds
trainer.seed, +1, ...: a seed group) and the verdict is on their mean, with its standard deviation and each seed's
result; reached needs every seed completed.

arguments:
  NAME [overrides...]  a preset (fxp reproduce --list), with fxp train overrides, e.g. data.path=DIR
  --seeds N            run it N times and judge the mean (N >= 2; 1 is one run)
  --list               the presets: metric, published value, tolerance, what a CPU machine without network lacks
  --from DIR           the verdict for a run (or seed group) already made from a preset (no training)
  -h, --help           show this help

examples:
  fxp reproduce --list
  fxp reproduce fastbook-01-adult data.path=DIR
  fxp reproduce lesson4-tabular --seeds 3 data.path=DIR
"""


def presets() -> dict[str, dict]:
    "Every preset's reproduce block (plus its one-line description), by name."
    from omegaconf import OmegaConf

    out = {}
    for name, doc in config.choices("experiment").items():
        block = OmegaConf.load(config.experiments_dir() / f"{name}.yaml").reproduce
        out[name] = {"description": doc, **OmegaConf.to_container(block)}
    return out


def main(args: list[str]) -> int:
    if not args:
        raise FxpError(USAGE)
    if args[0] in ("-h", "--help"):
        print(HELP, end="")
        return 0
    if args[0] == "--list":
        return list_presets()
    if args[0] == "--from":
        if len(args) != 2:
            raise FxpError(USAGE)
        return print_verdict(verdict(Path(args[1])))
    name, (seeds, overrides) = args[0], seeds_option(args[1:])
    preset = presets().get(name)
    if preset is None:
        raise FxpError(f"unknown preset {name!r}; choose from: {', '.join(presets())} (fxp reproduce --list)")
    if preset["needs"]:
        print(f"{name} needs {'; '.join(NEEDS.get(n, n) for n in preset['needs'])}", flush=True)
    stamp = f"{time.strftime('%Y-%m-%d_%H-%M-%S')}_{secrets.token_hex(3)}"  # as fxp train names its run folders
    run_dir = Path("outputs", "reproduce", name, stamp).resolve()
    from fxp import apps

    group = [f"trainer.seeds={seeds}"] if seeds else []
    try:
        apps.train([f"+experiment={name}", f"hydra.run.dir={run_dir}", *group, *overrides])  # `fxp train`, here
    except SystemExit:
        if not is_group(run_dir):  # a single run that failed; a seed group whose seeds did not all complete: judged
            raise
    return print_verdict(verdict(run_dir))


def seeds_option(args: list[str]) -> tuple[int | None, list[str]]:
    "`--seeds N` (or `--seeds=N`) anywhere among the overrides: N, and the overrides without it; else one line."
    rest, seeds, i = [], None, 0
    while i < len(args):
        arg = args[i]
        if arg == "--seeds" or arg.startswith("--seeds="):
            value = arg.partition("=")[2] if "=" in arg else (args[i + 1] if i + 1 < len(args) else "")
            i += 1 if "=" in arg else 2
            if not value.isdigit() or int(value) < 1:
                raise FxpError(f"fxp reproduce: --seeds {value or '(nothing)'}: give how many runs of the recipe, a "
                               f"whole number (e.g. --seeds 3)")
            seeds = int(value)
            continue
        rest.append(arg)
        i += 1
    return seeds, rest


def verdict(run_dir: Path) -> dict:
    "Published vs reached (final epoch) for a finished run of a preset (or a seed group of them: `group_verdict`)."
    if is_group(run_dir):
        return group_verdict(run_dir)
    cfg_file, summary_file = run_dir / CONFIG, run_dir / SUMMARY
    if not (cfg_file.is_file() and summary_file.is_file()):
        raise FxpError(f"{run_dir} is not a run folder (no {CONFIG} or {SUMMARY})")
    problem = unreadable(run_dir) or _bad_fields(read_summary(run_dir))
    if problem:
        raise FxpError(f"fxp reproduce --from: {run_dir}: {problem}; no verdict without it (run the preset anew: "
                       f"fxp reproduce NAME)")
    block = read_config(run_dir).get("reproduce")
    if block is None:
        raise FxpError(f"{run_dir} was not run from a preset (its {CONFIG} has no reproduce block); "
                       f"run one with fxp reproduce NAME")
    _check_block(block, run_dir)
    summary = read_summary(run_dir)
    reached = final_value(run_dir, block, summary)
    status = read_run(run_dir, run_dir.parent)["status"]  # a dead process's `running` reads as killed
    base = baselines(summary if block.get("step") is None else summary.get(str(block["step"])))
    baseline, baseline_of = base.get(block["metric"], (None, None))
    out = {"run": str(run_dir), **{k: block[k] for k in ("metric", "mode", "published", "tolerance", "source")},
           "status": status, "reached": reached, "wall_time_s": summary.get("wall_time_s"),
           "baseline": baseline, "baseline_of": baseline_of,
           "not_beaten": not_beaten({block["metric"]: reached}, base, SimpleNamespace(**block))}
    if reached is None:
        return {**out, "difference": None, "within_tolerance": False}
    difference = reached - block["published"]
    completed = status == "completed"  # only a completed run reaches a published figure (not one cut short)
    reached_it = completed and _gain(out, difference) >= -block["tolerance"]
    return {**out, "difference": difference, "within_tolerance": reached_it}


def group_verdict(folder: Path) -> dict:
    """Published vs the mean of the seeds' results (each its final epoch, as a run's verdict reads it), with their
    std and n (the seeds that completed); reached when every seed completed and the mean is within the tolerance.
    `members`: each seed's own verdict; `sigmas`: how many of the seeds' standard deviations the mean lies from the
    published value (None when they agree to the last digit)."""
    group = read_group(folder, folder)
    begun = [m for m in group["members"] if m["status"] != NOT_STARTED]
    if not begun:
        raise FxpError(f"fxp reproduce --from: {folder}: none of its seeds has started; run the preset anew: fxp "
                       f"reproduce NAME --seeds N")
    each = [{**verdict(folder / m["run"]), "seed": m["seed"]} for m in begun]
    done = [v["reached"] for v in each if v["status"] == "completed" and v["reached"] is not None]
    stats, first = spread(done), each[0]
    out = {**{k: first[k] for k in ("metric", "mode", "published", "tolerance", "source", "baseline_of")},
           "run": str(folder), "status": group["status"], "reached": stats["mean"], "std": stats["std"],
           "n": stats["n"], "members": each, "wall_time_s": sum(v["wall_time_s"] or 0 for v in each),
           "baseline": spread([v["baseline"] for v in each])["mean"]}
    base = {first["metric"]: (out["baseline"], first["baseline_of"])} if out["baseline"] is not None else {}
    out["not_beaten"] = not_beaten({first["metric"]: out["reached"]}, base, SimpleNamespace(**out))
    if stats["mean"] is None:
        return {**out, "difference": None, "within_tolerance": False, "sigmas": None}
    difference = stats["mean"] - first["published"]
    reached_it = group["status"] == "completed" and _gain(out, difference) >= -first["tolerance"]
    return {**out, "difference": difference, "within_tolerance": reached_it,
            "sigmas": difference / stats["std"] if stats["std"] else None}


def _gain(v: dict, difference: float) -> float:
    "How much better than the published value (< 0: worse)."
    return difference if v["mode"] == "max" else -difference


BLOCK = {"metric": str, "mode": str, "published": (int, float), "tolerance": (int, float), "source": str}


def _check_block(block, run_dir: Path) -> None:
    "A config.yaml's reproduce block has what a verdict reads, each of its type; else one line."
    bad = [k for k, t in BLOCK.items() if not isinstance(block, dict) or not isinstance(block.get(k), t)]
    if bad:
        raise FxpError(f"fxp reproduce --from: {run_dir / CONFIG}: its reproduce block lacks {', '.join(bad)} (or "
                       f"has another type); run the preset anew: fxp reproduce NAME")


def _bad_fields(summary: dict) -> str:
    "What a verdict reads from summary.json that has another shape ('' if none)."
    if not isinstance(summary.get("final_metrics", {}), dict):
        return f"{SUMMARY}'s final_metrics is not a mapping"
    if not isinstance(summary.get("wall_time_s", 0), (int, float, type(None))):
        return f"{SUMMARY}'s wall_time_s is not a number"
    return ""


def final_value(run_dir: Path, block, summary: dict):
    "The metric's last-epoch value: of the run, or of the step the published figure belongs to (e.g. `gen`)."
    if block.get("step") is None:
        value = summary.get("final_metrics", {}).get(block["metric"])
    else:
        rows = read_metrics(run_dir / str(block["step"]))
        value = rows[-1].get(block["metric"]) if rows else None
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def print_verdict(v: dict) -> int:
    "The verdict table; exit code 0 when the published result was reached within tolerance, else 1."
    from rich.table import Table

    ok, group = v["within_tolerance"], "members" in v
    of = f", mean of {v['n']} seeds" if group else ""
    table = Table(title=f"{v['metric']} ({v['mode']}){of}: {'reached' if ok else 'NOT reached'}", caption=v["source"])
    for col in ("published", "reached (mean ± std)" if group else "reached", "difference", "tolerance", "verdict",
                "status", "time", "baseline"):
        table.add_column(col, justify="right")
    reached = f"{fmt(v['reached'])} ± {fmt(v['std'])} (n={v['n']})" if group else fmt(v["reached"])
    table.add_row(fmt(v["published"]), reached, fmt(v["difference"]), f"±{v['tolerance']:g}",
                  verdict_words(v), str(v["status"]), f"{v['wall_time_s'] or 0:.0f}s",
                  f"{number(v['baseline'])} ({v['baseline_of']})" if v.get("baseline") is not None else "-")
    out = console()
    out.print(table)
    if group:
        out.print(seeds_table(v))
    lines = [sigma_line(v)] if group else []
    rule, folder = (GROUP_RULE, "group folder") if group else (RULE, "run folder")
    for line in [*lines, *v.get("not_beaten", []), rule, f"{folder}: {v['run']}"]:
        out.print(line, highlight=False, soft_wrap=True)
    return 0 if ok else 1


def fmt(x) -> str:
    "A verdict's number: four decimals (3e-06, not 0.0000)."
    return number(x) if x is None or abs(x) < 1e-3 else f"{x:.4f}"


def seeds_table(v: dict):
    "Each seed's result, status and time."
    from rich.table import Table

    table = Table(title=f"{v['metric']} of each seed")
    for col in ("seed", v["metric"], "difference", "status", "time", "run folder"):
        table.add_column(col, justify="left" if col in ("status", "run folder") else "right")
    for m in v["members"]:
        table.add_row(str(m["seed"]), fmt(m["reached"]), fmt(m["difference"]), str(m["status"]),
                      f"{m['wall_time_s'] or 0:.0f}s", Path(m["run"]).name)
    return table


def sigma_line(v: dict) -> str:
    """Which way the mean lies from the published value, by how much and by how many of the seeds' standard
    deviations: `the mean 0.8100 lies 0.0250 above the published 0.785: 0.6 standard deviations of the 3 seeds`."""
    if v["difference"] is None:
        return f"no seed recorded {v['metric']}: no mean to judge"
    way = "above" if v["difference"] > 0 else "below" if v["difference"] < 0 else "at"
    head = f"the mean {fmt(v['reached'])} lies {fmt(abs(v['difference']))} {way} the published {v['published']:g}"
    if v["sigmas"] is None:
        return f"{head}; the {v['n']} seeds agree (std 0): no spread to measure it by"
    return (f"{head}: {abs(v['sigmas']):.1f} standard deviations of the {v['n']} seeds (std {fmt(v['std'])}; "
            f"{'within' if abs(v['difference']) <= v['tolerance'] else 'beyond'} the tolerance ±{v['tolerance']:g})")


def verdict_words(v: dict) -> str:
    "Where the result is against the published value and its tolerance, in words."
    if v["status"] != "completed":
        return f"not completed ({v['status']})"
    if v["difference"] is None:
        return f"no {v['metric']} recorded"
    gain = _gain(v, v["difference"])
    if abs(gain) <= v["tolerance"]:
        return "within tolerance"
    return f"{'above' if v['difference'] > 0 else 'below'} the published value by more than the tolerance"


def list_presets() -> int:
    from rich.table import Table

    table = Table(title="fxp reproduce NAME (needs: what a CPU machine without network lacks)")
    for col in ("name", "metric", "published", "tolerance", "needs", "recipe"):
        table.add_column(col, overflow="fold")
    for name, p in presets().items():
        table.add_row(name, f"{p['metric']} ({p['mode']})", f"{p['published']:g}", f"±{p['tolerance']:g}",
                      ", ".join(p["needs"]) or "cpu", p["description"])
    console().print(table)
    return 0
