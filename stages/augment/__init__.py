"""The augment stage: run it as `python -m stages.augment` (dvc.yaml does)."""
