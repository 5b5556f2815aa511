"""Training: the trainers, the GRPO rewards, perplexity, multi-process saving, and the models."""
