"""The sandbox that runs model-written code: a persistent namespace per episode, in a confined worker process."""
from helpers.sandbox.host import Sandbox
from helpers.sandbox.limits import Limits

__all__ = ["Limits", "Sandbox"]
