"""The vae family: core (config, networks, loading), train, evaluate."""
