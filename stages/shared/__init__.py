"""Libraries several stages use; dvc.yaml names each file a stage imports."""
