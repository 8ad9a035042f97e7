"""The kernel every stage imports: params loading, schema, errors, atomic file io."""
