"""The one exception type the simulated apps raise: its message is shown to the agent as is."""


class ApiError(Exception):
    """An API call the app refused, with a message a model can act on."""

    def __init__(self, message: str, status_code: int = 422):
        super().__init__(message)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message
