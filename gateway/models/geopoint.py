"""LoopBack's `GeoPoint` property type: stored as the JSON object `{"lat", "lng"}` its `toJSON` prints.

juggler builds a GeoPoint from `{lat, lng}`, `[lat, lng]` or `"lat,lng"`, and throws (a 500) on anything
else; the gateway takes the same forms and refuses the rest with a 422.
"""

from __future__ import annotations

import math
from typing import Any

from gateway.models.definition import EmbeddedType, StrictMode

GEO_POINT = EmbeddedType("GeoPoint", (), StrictMode.REJECT)
"""The shape that marks a GeoPoint property (its value is checked here, not property by property)."""


def geo_point(value: Any) -> dict[str, float]:
    """`{"lat", "lng"}` for a GeoPoint in any of juggler's input forms; ValueError otherwise."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list) and len(value) == 2:
        lat, lng = value
    elif isinstance(value, dict) and set(value) == {"lat", "lng"}:
        lat, lng = value["lat"], value["lng"]
    else:
        raise ValueError("not a GeoPoint")
    lat, lng = _number(lat), _number(lng)
    if not (-90 <= lat <= 90 and -180 <= lng <= 180):
        raise ValueError("not a GeoPoint")
    return {"lat": lat, "lng": lng}


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("not a number")
    number = float(value.strip()) if isinstance(value, str) else value
    if not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ValueError("not a number")
    return number
