"""σ-space sampling. Importing the package fills the sampler and schedule registries."""

from engine.sampling import samplers, schedules  # noqa: F401  (registration side effects)
