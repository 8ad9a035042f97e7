"""The train stage: run it as `python -m stages.train` (dvc.yaml does)."""
