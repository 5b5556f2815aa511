"""The agent: prompts, the model policy and its generation backends, the expert and the simulated user."""
