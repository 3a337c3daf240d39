"""`fxp` on the command line: routes argv[0] to its command, imported only when it runs, and turns errors into exit
codes. Only the stdlib is imported here, so `fxp --help` and `fxp --version` answer at once.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

from fxp import __version__
from fxp.errors import FxpError, interrupt_under

USAGE = """usage: fxp COMMAND [ARGS]

commands:
  train [OVERRIDES...]       compose the config with Hydra and train; every Hydra flag works
                             (-m multirun, --cfg job, --info, --help, hydra.run.dir=...)
  lr-find [OVERRIDES...]     only fastai's LR finder: plot and suggested LRs in a run folder
  predict RUN_DIR INPUT...   predict with a run's exported model (image files or folders, texts, CSV rows;
                             collab: --user U [--top N] or a pairs CSV); --json
  reproduce NAME | --list    run a course recipe from experiments/ and compare with the published result;
                             --seeds N: N runs (a seed group), judged on their mean ± std
  resume RUN_DIR [--extend N]
                             continue an interrupted, failed or killed run from its last checkpoint, in its
                             folder, as if never stopped; --extend N: N more epochs on a completed run
  runs [DIR]                 the runs under DIR (./outputs), newest first, a sweep as one row with its best
                             job; --sort METRIC --task NAME --status S --json; fxp runs SWEEP_DIR lists its jobs;
                             runs that differ only in their seed are one row, mean ± std (n): --members each
  diagnose RUN_DIR           diverged / over-fitting / under-fitting / train longer, from the run's curves,
                             with what to try; writes RUN_DIR/plots/diagnosis.png; --json
  compare RUN... | GROUP_DIR | SWEEP_DIR [--html FILE] [--members]
                             runs side by side: final and best metrics with deltas to the first run, the
                             config keys that differ; --html: a page with the curves overlaid
  report RUN | GROUP_DIR | SWEEP_DIR
                             a self-contained report.html in the folder: metrics, curves, diagnosis, plots,
                             config; a sweep's jobs sorted by the metric, each swept value against it; a seed
                             group's mean ± std and curves with a band
  explain RUN_DIR [INPUT...] [--method cam|gradcam] [--target LABEL] [--layer NAME]
                             what the model looks at: CAM / Grad-CAM heatmaps over images (spectrograms for
                             audio), word occlusion for texts, permutation importance for tables; no INPUT: a few
                             validation items and the top losses; in RUN_DIR/explain/<stamp>/
  tasks                      the task, model, trainer, logger and experiment choices, one line each
  val RUN_DIR [data.path=DIR] [--split valid|test]
                             evaluate a saved run on its valid split or new labelled data, without retraining;
                             metrics and plots in RUN_DIR/eval/<stamp>/
  export RUN_DIR --format onnx|torchscript|onnx-int8|app | --bench
                             the model as a plain ONNX, TorchScript or int8 ONNX file with model.json (classes,
                             preprocessing) and a parity check against the learner, in RUN_DIR/export/; --bench:
                             every format's size, parity, metric and latency (export/bench.csv); app: a Gradio
                             app folder that runs on its own (export/app/); writes MODEL_CARD.md too
  card RUN_DIR               MODEL_CARD.md beside the model: data fingerprint, recipe, metrics with baselines,
                             diagnosis, export bench, limitations, how to load each exported format
  serve RUN_DIR [--host H] [--port P]
                             a web page and JSON API (POST /predict, GET /info, GET /health) for predictions
  show [OVERRIDES...]        see the data first, without training: a training batch (plots/batch.png) and the
                             DataBlock summary, in outputs/show/<task>/<stamp>
  check [OVERRIDES...] [--data] [--overfit]
                             before a run, in seconds: the config, the data, one batch of each step through the
                             real learner, export, reload, predict; the data doctor (--data: it alone); --overfit:
                             one batch learnt by heart; outputs/check/<task>/<stamp>/; exit 1 names what failed
  clean RUN_DIR [--top N]    the items a run's model gets most wrong: RUN_DIR/clean/top_losses.csv (mark keep,
                             delete, relabel:LABEL) and a contact sheet; next run: data.exclude=, data.relabel=
  cache ls | clear | prune [--dir D] [--max SIZE]
                             the decode-once image caches (data.cache): list them, remove them all, or the
                             least recently used beyond SIZE ($FXP_CACHE_MAX)
  --version                  fxp's version
  COMMAND --help             a command's own help (train and lr-find: Hydra's, with the config groups)

examples:
  fxp train                                   # digits, a small CNN on CPU, under a minute
  fxp train task=mnist data.path=DIR trainer.epochs=3
  fxp train -m trainer.lr=1e-3,3e-3           # a sweep: one run folder per job, sweep.csv, best.json
  fxp train trainer.seeds=3                   # a seed group: 3 runs, each metric as mean ± std (n=3)
  fxp train trainer.devices=2                 # one run over 2 processes (DDP; pip install 'fxp[dist]')
  fxp reproduce fastbook-01-adult data.path=DIR
  fxp predict outputs/digits/<run> digit.png
"""

# command → "module:function", the function taking the command's arguments and returning an exit code
COMMANDS = {
    "train": "fxp.apps:train",
    "lr-find": "fxp.apps:lr_find",
    "predict": "fxp.commands.predict:main",
    "reproduce": "fxp.commands.reproduce:main",
    "resume": "fxp.commands.resume:main",
    "runs": "fxp.commands.runs:main",
    "diagnose": "fxp.commands.diagnose:main",
    "tasks": "fxp.commands.tasks:main",
    "val": "fxp.commands.val:main",
    "export": "fxp.commands.export:main",
    "card": "fxp.commands.card:main",
    "serve": "fxp.commands.serve:main",
    "compare": "fxp.commands.compare:main",
    "report": "fxp.commands.report:main",
    "show": "fxp.apps:show",
    "clean": "fxp.commands.clean:main",
    "cache": "fxp.commands.cache:main",
    "check": "fxp.commands.check:main",
    "explain": "fxp.commands.explain:main",
}


def main(argv: list[str] | None = None) -> int:
    """Run `fxp ARGV...`; bad input is one line and exit code 2, Ctrl-C exit code 130, a closed pipe a quiet exit.
    As the program (`argv` None: sys.argv's), a Ctrl-C after the command ended is ignored: all that is left is the
    interpreter's exit, which Ctrl-C pressed again and again broke (a traceback from an exit handler, or killed)."""
    try:
        return exit_code(argv)
    finally:
        if argv is None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def exit_code(argv: list[str] | None) -> int:
    "What `fxp ARGV...` exits with, once it ran; what failed said in one line."
    try:
        code = route(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()  # a closed pipe shows here, not at exit as "Exception ignored"
        return code
    except FxpError as e:
        return fail(str(e))
    except KeyboardInterrupt as e:  # Ctrl-C before a job started (a job reports its own); a sweep's says how to go on
        return fail(str(e) or "interrupted", 130)
    except BrokenPipeError:  # `fxp ... | head` closed the pipe: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        if interrupt_under(e) is not None:  # Ctrl-C that a library's cleanup turned into its own error (OmegaConf's)
            return fail("interrupted", 130)
        raise


def route(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"fxp {__version__}")
        return 0
    if argv[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls `fxp -sc query=bash`
        argv = completion(argv)
        if not argv:
            return 0
    if argv[0] not in COMMANDS:
        return fail(f"unknown command {argv[0]!r}; choose from: {', '.join(COMMANDS)} (fxp --help)")
    return command(argv[0])(argv[1:]) or 0


def completion(argv: list[str]) -> list[str]:
    """Tab completion: the command names while the first word is typed; Hydra's override completion after
    `fxp train ` and `fxp lr-find ` (the command word taken out of COMP_LINE); nothing after the other commands,
    so the shell completes file names. Returns the argv for `fxp train` to run, or [] when answered here."""
    if not any(a.startswith("query=") for a in argv[1:]):
        return ["train", *argv]  # install=bash, uninstall=bash: Hydra's script for `fxp`
    words = os.environ.get("COMP_LINE", "").split()
    typing_first = len(words) <= 1 or (len(words) == 2 and not os.environ.get("COMP_LINE", "").endswith(" "))
    if typing_first:
        typed = words[1] if len(words) == 2 else ""
        sep = "\n" if "query=fish" in argv else " "  # as Hydra's fish and bash completions answer
        print(sep.join(c for c in COMMANDS if c.startswith(typed)))
        return []
    if words[1] not in ("train", "lr-find"):
        return []
    os.environ["COMP_LINE"] = os.environ["COMP_LINE"].replace(f" {words[1]} ", " ", 1)
    return ["train", *argv]


def command(name: str):
    "The function that runs `fxp NAME`, its module imported now."
    module, _, fn = COMMANDS[name].partition(":")
    return getattr(importlib.import_module(module), fn)


def fail(message: str, code: int = 2) -> int:
    "One line on stderr (a line break in a value the user gave is shown as \\n), and the exit code."
    print("fxp: error: " + "\\n".join(message.strip().splitlines()), file=sys.stderr)
    return code
