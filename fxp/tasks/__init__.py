"One module per task kind; see `fxp.dispatch` for the protocol each follows."
