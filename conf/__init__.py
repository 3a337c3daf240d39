"The packaged Hydra config tree (`pkg://fxp.conf`)."
