"""The split stage: run it as `python -m stages.split` (dvc.yaml does)."""
