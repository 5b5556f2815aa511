"""Reinforcement learning: rollouts of whole episodes and chats, rewards from their graded outcomes, GRPO."""
