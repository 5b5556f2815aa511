"""Evaluating trained models beyond whole episodes: next-step metrics, chats with a simulated user, custom tasks."""
