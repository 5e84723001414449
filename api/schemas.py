"""OpenAPI descriptions of the bodies the routes read and write as plain JSON (the event
contract's limits come from `pricing.events`, so the document cannot drift from the rules)."""

from __future__ import annotations

from typing import Any

from pricing.events import (
    MAX_ID_LENGTH,
    MAX_PROPERTIES,
    MAX_PROPERTY_KEY_LENGTH,
    MAX_PROPERTY_STRING_LENGTH,
)

_ID: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}

EVENT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["customer_id", "metric"],
    "properties": {
        "event_id": {**_ID, "description": "Unique per customer; sending it again counts once."},
        "customer_id": _ID,
        "metric": _ID,
        "quantity": {
            "anyOf": [{"type": "string"}, {"type": "number"}],
            "description": "Decimal, |q| < 10^18, at most 6 places; default 1.",
        },
        "timestamp": {
            "type": "string",
            "format": "date-time",
            "description": "RFC 3339 with an offset; default now.",
        },
        "properties": {
            "type": "object",
            "maxProperties": MAX_PROPERTIES,
            "propertyNames": {"minLength": 1, "maxLength": MAX_PROPERTY_KEY_LENGTH},
            "additionalProperties": {
                "anyOf": [
                    {"type": "string", "maxLength": MAX_PROPERTY_STRING_LENGTH},
                    {"type": "number"},
                    {"type": "boolean"},
                ]
            },
        },
    },
}

_BATCH: dict[str, Any] = {"type": "array", "minItems": 1, "maxItems": 10_000, "items": EVENT}

EVENTS_REQUEST: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "anyOf": [
                    EVENT,
                    _BATCH,
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["events"],
                        "properties": {"events": _BATCH},
                    },
                ]
            }
        }
    },
}

_STATUS: dict[str, Any] = {
    "type": "object",
    "required": ["index", "event_id", "status"],
    "properties": {
        "index": {"type": "integer"},
        "event_id": {"type": ["string", "null"]},
        "status": {"enum": ["accepted", "rejected", "duplicate"]},
        "code": {"type": "string", "description": "why it was rejected (unknown_customer, ...)"},
        "error": {
            "type": "object",
            "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
        },
    },
}

EVENTS_RESPONSE: dict[str, Any] = {
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["accepted", "rejected", "events"],
                "properties": {
                    "accepted": {"type": "integer"},
                    "rejected": {"type": "integer"},
                    "events": {"type": "array", "items": _STATUS},
                },
            }
        }
    }
}


_TEXT_OR_NULL: dict[str, Any] = {"type": ["string", "null"]}

ALERT: dict[str, Any] = {
    "type": "object",
    "required": [
        "id", "customer_id", "kind", "metric", "threshold", "basis", "value", "period",
        "period_start", "period_end", "plan", "estimated_bill", "currency", "triggered_at",
        "outbox_id",
    ],
    "properties": {
        "id": {"type": "integer"},
        "customer_id": {"type": "string"},
        "kind": {"type": "string", "description": "usage, spend or limit"},
        "metric": {**_TEXT_OR_NULL, "description": "null for a spend alert"},
        "threshold": {"type": "string", "description": "share of `basis`, or an amount"},
        "basis": {**_TEXT_OR_NULL, "description": "the included usage a share is of"},
        "value": {"type": "string", "description": "what was reached when it fired"},
        "period": _TEXT_OR_NULL,
        "period_start": {"type": "string", "format": "date-time"},
        "period_end": {"type": ["string", "null"], "format": "date-time"},
        "plan": _TEXT_OR_NULL,
        "estimated_bill": _TEXT_OR_NULL,
        "currency": _TEXT_OR_NULL,
        "triggered_at": {"type": "string", "format": "date-time"},
        "outbox_id": {"type": ["integer", "null"]},
    },
}  # fmt: skip

ALERTS_RESPONSE: dict[str, Any] = {
    "description": "alerts fired, oldest first (`meter alerts list --json`)",
    "content": {"application/json": {"schema": {"type": "array", "items": ALERT}}},
}


def json_object(description: str) -> dict[str, Any]:
    """A 200 answer holding a JSON object (the CLI's `--json` document)."""
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "object"}}},
    }


def json_array(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}},
    }
