"""The filter stage: run it as `python -m stages.filter` (dvc.yaml does)."""
