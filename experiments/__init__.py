"Experiment presets (`fxp train +experiment=NAME`, `fxp reproduce NAME`): course recipes with their published results."
