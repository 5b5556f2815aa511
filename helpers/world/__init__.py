"""The simulated world: apps called as `apis.<app>.<api>(**kwargs)` over one WorldState."""
from __future__ import annotations

import difflib
from datetime import datetime
from typing import Any

from helpers.world.apps import APP_CLASSES
from helpers.world.errors import ApiError
from helpers.world.spec import ApiSpec, bind_arguments, collect_api_specs
from helpers.world.state import (
    Contact, PaymentCard, PaymentRequest, Person, TopUp, Transaction, WalletState, WorldState,
)

API_SPECS: dict[str, dict[str, ApiSpec]] = {cls.name: collect_api_specs(cls.name, cls) for cls in APP_CLASSES}

__all__ = [
    "API_SPECS", "ApiError", "Contact", "PaymentCard", "PaymentRequest", "Person", "TopUp",
    "Transaction", "WalletState", "World", "WorldState",
]


class World:
    """One episode's world: a private copy of the initial state, the apps, and the task's completion."""

    def __init__(self, initial: WorldState):
        self.state = initial.model_copy(deep=True)
        self.tokens: dict[str, set[str]] = {}
        self.completion: dict | None = None
        self.apps = {cls.name: cls(self) for cls in APP_CLASSES}

    def now(self) -> datetime:
        return self.state.now

    def app_specs(self, app_name: str) -> dict[str, ApiSpec]:
        if app_name not in API_SPECS:
            raise ApiError(f"No app named '{app_name}'. Available apps: {', '.join(API_SPECS)}.", status_code=404)
        return API_SPECS[app_name]

    def api_spec(self, app_name: str, api_name: str) -> ApiSpec:
        specs = self.app_specs(app_name)
        if api_name not in specs:
            close = difflib.get_close_matches(api_name, list(specs), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ApiError(
                f"App '{app_name}' has no API named '{api_name}'.{hint} "
                f"List them with apis.api_docs.show_api_descriptions(app_name='{app_name}').",
                status_code=404,
            )
        return specs[api_name]

    def call(self, app_name: str, api_name: str, args: list | tuple = (), kwargs: dict | None = None) -> Any:
        """Validate the arguments and run one API; raises ApiError with a message for the agent."""
        spec = self.api_spec(app_name, api_name)
        values = bind_arguments(spec, list(args), dict(kwargs or {}))
        return getattr(self.apps[app_name], api_name)(**values)

    @property
    def completed(self) -> bool:
        return self.completion is not None
