"""σ-space sampling: samplers by family, σ schedules, guidance (CFG) and the name registry that
composes them (`engine.sampling.registry`)."""
