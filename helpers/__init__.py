"""Helpers for the notebooks: the simulated apps, the sandbox, tasks, the expert, and the pipeline."""
