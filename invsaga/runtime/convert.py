"""Small conversions every servicer needs: timestamps and page tokens."""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from google.protobuf.timestamp_pb2 import Timestamp

from invsaga.runtime.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# A page token holds an offset; past this no listing goes (and no SQL OFFSET overflows).
MAX_PAGE_OFFSET = 1_000_000
MAX_PAGE_TOKEN = 64  # characters: the tokens this API hands out are a dozen


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def to_timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=timezone.utc)


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def page_window(page_size: int, page_token: str) -> tuple[int, int]:
    """(offset, limit) from a request's page_size and page_token."""
    if page_size < 0:
        raise InvalidArgument("page_size must not be negative", violations=[("page_size", "must be ≥ 0")])
    limit = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    if not page_token:
        return 0, limit
    offset = -1
    if len(page_token) <= MAX_PAGE_TOKEN:
        try:
            text = base64.urlsafe_b64decode(page_token.encode()).decode("ascii")
        except ValueError:  # binascii.Error, UnicodeDecodeError
            text = ""
        if text.isascii() and text.isdigit():
            offset = int(text)
    if not 0 <= offset <= MAX_PAGE_OFFSET:
        raise InvalidArgument("malformed page_token", violations=[("page_token", "not a token from this API")])
    return offset, limit


def next_page_token(offset: int, limit: int, returned: int) -> str:
    return base64.urlsafe_b64encode(str(offset + limit).encode()).decode() if returned == limit else ""
