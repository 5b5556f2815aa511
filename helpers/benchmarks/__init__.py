"""Scripts that measure how fast parts of the pipeline run on this machine."""
