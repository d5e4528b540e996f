"""Brevo adapter: the API client over ``brevo-python`` and its result types."""

from connector.brevo.client import (
    BrevoClient,
    ContactStream,
    EmailAlreadySentError,
    FieldValidationError,
    ImportBudgetExhaustedError,
    ImportFailedError,
    ResubscribeRefusedError,
    brevo_time,
)
from connector.brevo.models import (
    BrevoAccount,
    BrevoAttribute,
    BrevoContact,
    BrevoList,
    BrevoProcess,
    BrevoWebhook,
    EmailAddress,
    ImportRow,
    ListMembershipResult,
)

__all__ = [
    "BrevoAccount",
    "BrevoAttribute",
    "BrevoClient",
    "BrevoContact",
    "BrevoList",
    "BrevoProcess",
    "BrevoWebhook",
    "ContactStream",
    "EmailAddress",
    "EmailAlreadySentError",
    "FieldValidationError",
    "ImportBudgetExhaustedError",
    "ImportFailedError",
    "ImportRow",
    "ListMembershipResult",
    "ResubscribeRefusedError",
    "brevo_time",
]
