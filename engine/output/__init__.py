"""What leaves the engine as files: pictures saved atomically with their infotext, and grids with
their legends."""
