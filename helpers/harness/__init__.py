"""The harness: running a policy on tasks in the sandbox, episode by episode, and scoring the splits."""
