"""Training: the stage registry, the typed run config, the Trainer wiring and the `sicog train` command."""
