"""What a request is: the generation parameters, the sampler-options table, user settings, the
A1111 infotext that records a job, and prompt styles. Imports nothing from the rest of the engine
but the sampler and conditioning names it validates against."""
