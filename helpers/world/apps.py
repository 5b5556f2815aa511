"""The four simulated apps (api_docs, supervisor, phone, wallet) acting on one WorldState."""
from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Annotated, Optional

from helpers.world.errors import ApiError
from helpers.world.spec import Param, api
from helpers.world.state import Contact, PaymentRequest, TopUp, Transaction

if TYPE_CHECKING:
    from helpers.world import World

Token = Annotated[str, Param("Access token from this app's login API.")]
PageIndex = Annotated[int, Param("Which page of results to return, starting at 0.", ge=0)]
PageLimit = Annotated[int, Param("Number of results per page.", ge=1, le=20)]
Amount = Annotated[float, Param("Amount in dollars.", gt=0, le=100_000, max_decimals=2)]

CONTACT_SCHEMA = {
    "contact_id": "integer", "first_name": "string", "last_name": "string",
    "email": "string", "phone_number": "string", "relationship": "string", "nickname": "string (only if set)",
}
TRANSACTION_SCHEMA = {
    "transaction_id": "integer", "sender_email": "string", "receiver_email": "string",
    "amount": "number", "description": "string", "private": "boolean",
    "created_at": "string", "payment_card_id": "integer | null",
}
REQUEST_SCHEMA = {
    "payment_request_id": "integer", "requester_email": "string", "payer_email": "string",
    "amount": "number", "description": "string", "private": "boolean",
    "status": "string", "created_at": "string", "updated_at": "string | null",
}
USER_SCHEMA = {"first_name": "string", "last_name": "string", "email": "string"}


def _page(items: list, page_index: int, page_limit: int) -> list:
    return items[page_index * page_limit:(page_index + 1) * page_limit]


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())


class App:
    """Base class: every app reads and writes the world it belongs to."""

    name = ""
    description = ""

    def __init__(self, world: World):
        self.world = world

    @property
    def state(self):
        return self.world.state

    def _token_for(self, username: str) -> str:
        digest = hashlib.sha256(f"{self.name}:{username}".encode()).hexdigest()[:24]
        return f"{self.name}-{digest}"

    def _check_token(self, access_token: str) -> None:
        if access_token not in self.world.tokens.get(self.name, set()):
            raise ApiError(
                f"Invalid or expired access token for the {self.name} app. "
                f"Get one with apis.{self.name}.login(username=..., password=...).",
                status_code=401,
            )

    def _login(self, username: str, password: str, expected_username: str) -> dict:
        if username != expected_username or password != self.state.passwords.get(self.name):
            raise ApiError(f"Invalid username or password for the {self.name} app.", status_code=401)
        token = self._token_for(username)
        self.world.tokens.setdefault(self.name, set()).add(token)
        return {"access_token": token, "token_type": "Bearer"}


class ApiDocs(App):
    name = "api_docs"
    description = "Documentation of every app and API available to you."

    @api("List the apps available to you with a one-line description of each.",
         [{"name": "string", "description": "string"}])
    def show_app_descriptions(self):
        return [{"name": app.name, "description": app.description} for app in self.world.apps.values()]

    @api("List the APIs of one app with a one-line description of each.",
         [{"name": "string", "description": "string"}])
    def show_api_descriptions(self, app_name: Annotated[str, Param("Name of the app, e.g. 'wallet'.")]):
        specs = self.world.app_specs(app_name)
        return [{"name": s.name, "description": s.description} for s in specs.values()]

    @api("Show the full specification of one API: its parameters, their constraints and its response.",
         {"app_name": "string", "api_name": "string", "description": "string",
          "parameters": [{"name": "string", "type": "string", "required": "boolean",
                          "description": "string", "default": "any", "constraints": ["string"]}],
          "response_schema": "any"})
    def show_api_doc(self, app_name: Annotated[str, Param("Name of the app, e.g. 'wallet'.")],
                     api_name: Annotated[str, Param("Name of the API, e.g. 'send_money'.")]):
        return self.world.api_spec(app_name, api_name).doc()


class Supervisor(App):
    name = "supervisor"
    description = "Information about you (the supervisor): profile, account passwords, payment cards; ends the task."

    @api("Show your profile: name, email and phone number.",
         {"first_name": "string", "last_name": "string", "email": "string", "phone_number": "string"})
    def show_profile(self):
        return self.state.supervisor.model_dump()

    @api("Show the passwords of your accounts in the other apps.",
         [{"account_name": "string", "password": "string"}])
    def show_account_passwords(self):
        return [{"account_name": k, "password": v} for k, v in self.state.passwords.items()]

    @api("Show your payment cards and the credit still available on each.",
         [{"payment_card_id": "integer", "card_name": "string", "card_number": "string",
           "expiry_date": "string", "balance": "number"}])
    def show_payment_cards(self):
        return [card.model_dump() for card in self.state.payment_cards]

    @api("Mark the task as finished. Give `answer` when the task asks a question; use "
         "status='fail' when the task cannot be done.",
         {"message": "string"})
    def complete_task(
        self,
        answer: Annotated[Optional[str | float | int], Param("The answer, if the task asks a question.")] = None,
        status: Annotated[str, Param("Whether you did the task.", choices=("success", "fail"))] = "success",
    ):
        if self.world.completion is not None:
            raise ApiError("The task is already completed.")
        self.world.completion = {"answer": answer, "status": status}
        return {"message": "Task marked as completed."}


class Phone(App):
    name = "phone"
    description = "Your phone's contact book: names, phone numbers, emails and relationships."

    @api("Log in to the phone app with your phone number and password; returns an access token.",
         {"access_token": "string", "token_type": "string"})
    def login(self, username: Annotated[str, Param("Your phone number.")],
              password: Annotated[str, Param("Your phone app password.")]):
        return self._login(username, password, self.state.supervisor.phone_number)

    @api("Search your contacts by name, nickname, email or phone number (empty query lists all); paged.",
         [CONTACT_SCHEMA])
    def search_contacts(
        self, access_token: Token,
        query: Annotated[str, Param("Text to look for in names, emails and phone numbers.")] = "",
        relationship: Annotated[Optional[str], Param("Only contacts with this relationship, e.g. 'sister'.")] = None,
        page_index: PageIndex = 0, page_limit: PageLimit = 5,
    ):
        self._check_token(access_token)
        words = query.lower().split()
        found = []
        for contact in self.state.contacts:
            if relationship is not None and contact.relationship.lower() != relationship.lower():
                continue
            if words and not all(self._matches(contact, w) for w in words):
                continue
            found.append(contact.model_dump(exclude_none=True))
        return _page(found, page_index, page_limit)

    @staticmethod
    def _matches(contact: Contact, word: str) -> bool:
        if word in f"{contact.first_name} {contact.last_name} {contact.nickname or ''} {contact.email}".lower():
            return True
        digits = _digits(word)
        return len(digits) >= 3 and digits in _digits(contact.phone_number)

    @api("Show one contact's details.", CONTACT_SCHEMA)
    def show_contact(self, access_token: Token,
                     contact_id: Annotated[int, Param("The contact's id.")]):
        self._check_token(access_token)
        for contact in self.state.contacts:
            if contact.contact_id == contact_id:
                return contact.model_dump(exclude_none=True)
        raise ApiError(f"No contact with contact_id {contact_id}.", status_code=404)


class Wallet(App):
    name = "wallet"
    description = "Your payments wallet: balance, sending and requesting money, payment requests, transactions."

    @api("Log in to the wallet with your email and password; returns an access token.",
         {"access_token": "string", "token_type": "string"})
    def login(self, username: Annotated[str, Param("Your email address.")],
              password: Annotated[str, Param("Your wallet password.")]):
        return self._login(username, password, self.state.supervisor.email)

    @api("Show your wallet balance.", {"balance": "number"})
    def show_balance(self, access_token: Token):
        self._check_token(access_token)
        return {"balance": round(self.state.wallet.balance, 2)}

    @api("Send money to another wallet user, from your balance or, if given, charged to a payment card.",
         {"message": "string", "transaction_id": "integer"})
    def send_money(
        self, access_token: Token,
        receiver_email: Annotated[str, Param("Email of the wallet user to pay.")],
        amount: Amount,
        description: Annotated[str, Param("A note shown with the payment.")] = "",
        private: Annotated[bool, Param("Hide the payment from the public feed.")] = False,
        payment_card_id: Annotated[Optional[int], Param("Charge this payment card instead of the balance.")] = None,
    ):
        self._check_token(access_token)
        receiver = self._user(receiver_email)
        if receiver.email == self.state.supervisor.email:
            raise ApiError("You cannot send money to yourself.")
        self._charge(amount, payment_card_id)
        transaction = Transaction(
            transaction_id=self._next_id(self.state.wallet.transactions, "transaction_id"),
            sender_email=self.state.supervisor.email, receiver_email=receiver.email, amount=amount,
            description=description, private=private, created_at=self.world.now(),
            payment_card_id=payment_card_id,
        )
        self.state.wallet.transactions.append(transaction)
        return {"message": f"Sent {_money(amount)} to {receiver.email}.", "transaction_id": transaction.transaction_id}

    @api("Ask another wallet user to pay you an amount.",
         {"message": "string", "payment_request_id": "integer"})
    def create_payment_request(
        self, access_token: Token,
        user_email: Annotated[str, Param("Email of the wallet user who should pay you.")],
        amount: Amount,
        description: Annotated[str, Param("A note shown with the request.")] = "",
        private: Annotated[bool, Param("Hide the request from the public feed.")] = False,
    ):
        self._check_token(access_token)
        payer = self._user(user_email)
        if payer.email == self.state.supervisor.email:
            raise ApiError("You cannot request money from yourself.")
        request = PaymentRequest(
            payment_request_id=self._next_id(self.state.wallet.payment_requests, "payment_request_id"),
            requester_email=self.state.supervisor.email, payer_email=payer.email, amount=amount,
            description=description, private=private, created_at=self.world.now(),
        )
        self.state.wallet.payment_requests.append(request)
        return {"message": f"Requested {_money(amount)} from {payer.email}.",
                "payment_request_id": request.payment_request_id}

    @api("List payment requests you received (others ask you to pay) or sent, newest first; paged.",
         [REQUEST_SCHEMA])
    def show_payment_requests(
        self, access_token: Token,
        direction: Annotated[str, Param("Requests you 'received' or 'sent'.", choices=("received", "sent"))] = "received",
        status: Annotated[Optional[str], Param("Only requests with this status.",
                                               choices=("pending", "approved", "denied"))] = None,
        user_email: Annotated[Optional[str], Param("Only requests with this other user.")] = None,
        page_index: PageIndex = 0, page_limit: PageLimit = 5,
    ):
        self._check_token(access_token)
        me = self.state.supervisor.email
        found = []
        for request in self.state.wallet.payment_requests:
            mine, other = ((request.payer_email, request.requester_email) if direction == "received"
                           else (request.requester_email, request.payer_email))
            if mine != me or (status and request.status != status) or (user_email and other != user_email):
                continue
            found.append(request)
        found.sort(key=lambda r: (r.created_at, r.payment_request_id), reverse=True)
        return [r.model_dump(mode="json") for r in _page(found, page_index, page_limit)]

    @api("Pay a pending payment request you received, from your balance or a payment card.",
         {"message": "string", "transaction_id": "integer"})
    def approve_payment_request(
        self, access_token: Token,
        payment_request_id: Annotated[int, Param("Id of the request to pay.")],
        payment_card_id: Annotated[Optional[int], Param("Charge this payment card instead of the balance.")] = None,
    ):
        self._check_token(access_token)
        request = self._received_pending_request(payment_request_id)
        self._charge(request.amount, payment_card_id)
        request.status, request.updated_at = "approved", self.world.now()
        transaction = Transaction(
            transaction_id=self._next_id(self.state.wallet.transactions, "transaction_id"),
            sender_email=self.state.supervisor.email, receiver_email=request.requester_email,
            amount=request.amount, description=request.description, private=request.private,
            created_at=self.world.now(), payment_card_id=payment_card_id,
        )
        self.state.wallet.transactions.append(transaction)
        return {"message": f"Paid request {payment_request_id} ({_money(request.amount)}).",
                "transaction_id": transaction.transaction_id}

    @api("Decline a pending payment request you received.", {"message": "string"})
    def deny_payment_request(self, access_token: Token,
                             payment_request_id: Annotated[int, Param("Id of the request to decline.")]):
        self._check_token(access_token)
        request = self._received_pending_request(payment_request_id)
        request.status, request.updated_at = "denied", self.world.now()
        return {"message": f"Denied request {payment_request_id}."}

    @api("Move money from one of your payment cards into your wallet balance.",
         {"message": "string", "balance": "number"})
    def add_to_balance(self, access_token: Token, amount: Amount,
                       payment_card_id: Annotated[int, Param("The payment card to charge.")]):
        self._check_token(access_token)
        card = self._card(payment_card_id)
        if card.balance < amount:
            raise ApiError(f"Payment card {payment_card_id} has only {_money(card.balance)} of credit left.")
        card.balance = round(card.balance - amount, 2)
        self.state.wallet.balance = round(self.state.wallet.balance + amount, 2)
        self.state.wallet.top_ups.append(TopUp(
            top_up_id=self._next_id(self.state.wallet.top_ups, "top_up_id"), payment_card_id=payment_card_id,
            amount=amount, created_at=self.world.now()))
        return {"message": f"Added {_money(amount)} to your balance.", "balance": self.state.wallet.balance}

    @api("List your transactions, newest first, optionally filtered; paged.", [TRANSACTION_SCHEMA])
    def show_transactions(
        self, access_token: Token,
        user_email: Annotated[Optional[str], Param("Only transactions with this user.")] = None,
        direction: Annotated[Optional[str], Param("Only money you 'sent' or 'received'.",
                                                  choices=("sent", "received"))] = None,
        min_created_at: Annotated[Optional[str], Param("Only transactions at or after this time.",
                                                       is_datetime=True)] = None,
        max_created_at: Annotated[Optional[str], Param("Only transactions at or before this time.",
                                                       is_datetime=True)] = None,
        page_index: PageIndex = 0, page_limit: PageLimit = 5,
    ):
        self._check_token(access_token)
        me = self.state.supervisor.email
        found = []
        for t in self.state.wallet.transactions:
            if me not in (t.sender_email, t.receiver_email):
                continue
            sent = t.sender_email == me
            other = t.receiver_email if sent else t.sender_email
            if user_email and other != user_email:
                continue
            if direction and direction != ("sent" if sent else "received"):
                continue
            if (min_created_at and t.created_at < min_created_at) or (max_created_at and t.created_at > max_created_at):
                continue
            found.append(t)
        found.sort(key=lambda t: (t.created_at, t.transaction_id), reverse=True)
        return [t.model_dump(mode="json") for t in _page(found, page_index, page_limit)]

    @api("Search wallet users by name or email; paged.", [USER_SCHEMA])
    def search_users(self, access_token: Token,
                     query: Annotated[str, Param("Text to look for in names and emails.")] = "",
                     page_index: PageIndex = 0, page_limit: PageLimit = 5):
        self._check_token(access_token)
        words = query.lower().split()
        found = [
            {"first_name": u.first_name, "last_name": u.last_name, "email": u.email}
            for u in self.state.wallet.users
            if u.email != self.state.supervisor.email
            and all(w in f"{u.first_name} {u.last_name} {u.email}".lower() for w in words)
        ]
        return _page(found, page_index, page_limit)

    @api("List your wallet friends; paged.", [USER_SCHEMA])
    def show_friends(self, access_token: Token, page_index: PageIndex = 0, page_limit: PageLimit = 5):
        self._check_token(access_token)
        friends = [self._user(email) for email in self.state.wallet.friends]
        rows = [{"first_name": u.first_name, "last_name": u.last_name, "email": u.email} for u in friends]
        return _page(rows, page_index, page_limit)

    def _user(self, email: str):
        for user in self.state.wallet.users:
            if user.email.lower() == email.strip().lower():
                return user
        raise ApiError(f"No wallet user with email '{email}'. Look people up with apis.wallet.search_users "
                       "or in your phone contacts.", status_code=404)

    def _card(self, payment_card_id: int):
        for card in self.state.payment_cards:
            if card.payment_card_id == payment_card_id:
                return card
        raise ApiError(f"No payment card with payment_card_id {payment_card_id}. "
                       "See apis.supervisor.show_payment_cards().", status_code=404)

    def _charge(self, amount: float, payment_card_id: int | None) -> None:
        if payment_card_id is not None:
            card = self._card(payment_card_id)
            if card.balance < amount:
                raise ApiError(f"Payment card {payment_card_id} has only {_money(card.balance)} of credit left.")
            card.balance = round(card.balance - amount, 2)
            return
        wallet = self.state.wallet
        if wallet.balance < amount:
            raise ApiError(
                f"Insufficient balance: you have {_money(wallet.balance)} but need {_money(amount)}. "
                "Add money with add_to_balance or pass a payment_card_id.")
        wallet.balance = round(wallet.balance - amount, 2)

    def _received_pending_request(self, payment_request_id: int) -> PaymentRequest:
        for request in self.state.wallet.payment_requests:
            if request.payment_request_id != payment_request_id:
                continue
            if request.payer_email != self.state.supervisor.email:
                raise ApiError(f"Payment request {payment_request_id} was not sent to you.", status_code=403)
            if request.status != "pending":
                raise ApiError(f"Payment request {payment_request_id} is already {request.status}; "
                               "only pending requests can be approved or denied.", status_code=409)
            return request
        raise ApiError(f"No payment request with payment_request_id {payment_request_id}.", status_code=404)

    @staticmethod
    def _next_id(items: list, field: str) -> int:
        return max((getattr(item, field) for item in items), default=0) + 1


APP_CLASSES = (ApiDocs, Supervisor, Phone, Wallet)
