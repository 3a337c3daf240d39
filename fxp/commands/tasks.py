"`fxp tasks`: each config group's choices with their one-line descriptions; reads the YAML's first comments only."
from __future__ import annotations

from fxp import config


def main(args: list[str]) -> int:
    rows = [(f"{group}={name}", doc) for group in config.GROUPS for name, doc in config.choices(group).items()]
    width = max(len(choice) for choice, _ in rows)
    for choice, doc in rows:
        print(f"{choice:<{width}}  {doc}")
    return 0
