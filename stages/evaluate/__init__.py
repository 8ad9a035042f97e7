"""The evaluate stage: run it as `python -m stages.evaluate` (dvc.yaml does)."""
