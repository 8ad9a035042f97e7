"""The crawl stage: run it as `python -m stages.crawl` (dvc.yaml does)."""
