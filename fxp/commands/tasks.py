"`fxp tasks`: each config group's choices with their one-line descriptions; reads the YAML's first comments only."
from __future__ import annotations

from fxp import config
from fxp.commands import Parser


def main(args: list[str]) -> int:
    Parser(prog="fxp tasks", description="Each config group's choices (task, model, trainer, logger, experiment) "
                                         "with its one-line description; pick one with GROUP=NAME, e.g. "
                                         "fxp train task=pets model=resnet34.").parse_args(args)
    rows = [(f"{group}={name}", doc) for group in config.GROUPS for name, doc in config.choices(group).items()]
    width = max(len(choice) for choice, _ in rows)
    for choice, doc in rows:
        print(f"{choice:<{width}}  {doc}")
    return 0
