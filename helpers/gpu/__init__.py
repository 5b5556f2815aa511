"""GPUs: memory estimates, settings checks, multi-process launch and its accelerate configs, the GPU requirement set."""
