"""The hpo stage: run it as `python -m stages.hpo` (dvc.yaml does)."""
