"""The packaged Hydra config tree (`pkg://fxp.conf`).

Hydra imports this package when it first reads the tree, in every process that composes a config (a launcher's
workers too): the schemas, presets and resolvers the YAML names are registered then, and only then.
"""
from fxp.config import register

register()
