"""Model registry, loading and cache.

Submodules are imported where used (not re-exported here) so that `import engine.models.registry`
does not pull in diffusers: a cold diffusers import costs seconds and startup time is a feature.
"""
