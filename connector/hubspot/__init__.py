"""HubSpot side of the connector: the API client, its credentials and its result types."""

from connector.hubspot.auth import (
    DbTokenStore,
    OAuthAuth,
    StaticTokenAuth,
    StoredTokens,
    TokenStore,
)
from connector.hubspot.client import HubSpotClient, last_modified_property
from connector.hubspot.models import (
    AccountDetails,
    Association,
    AssociationLabel,
    AssociationWriteResult,
    BatchResult,
    HubSpotObject,
    Owner,
    PropertyDef,
    PropertyOption,
    RecordError,
    TokenInfo,
)
from connector.hubspot.paths import Paths, Route

__all__ = [
    "AccountDetails",
    "Association",
    "AssociationLabel",
    "AssociationWriteResult",
    "BatchResult",
    "DbTokenStore",
    "HubSpotClient",
    "HubSpotObject",
    "OAuthAuth",
    "Owner",
    "Paths",
    "PropertyDef",
    "PropertyOption",
    "RecordError",
    "Route",
    "StaticTokenAuth",
    "StoredTokens",
    "TokenInfo",
    "TokenStore",
    "last_modified_property",
]
