"""params: the stage that validates params.yaml and writes what each stage reads."""
