"""What every run stands on: settings (presets, overrides, checks), safe file output and run locks,
checkpoints and run folders, and torchrun process groups."""
