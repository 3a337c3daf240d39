"fxp: a command-line experiment runner for fastai."
__version__ = "0.1.0"
