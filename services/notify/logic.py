"""Notify rules: input validation, the webhook payload and signature, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from urllib.parse import unquote, urlsplit, parse_qsl

from google.protobuf import json_format

from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.runtime.errors import Violations
from services.common import MAX_TEXT, check_id, db_names

MAX_ATTRIBUTES = 64
LOG_CHANNEL = "log"

SIGNATURE_HEADER = "X-Invsaga-Signature"
NOTIFICATION_ID_HEADER = "X-Invsaga-Notification-Id"
ATTEMPT_HEADER = "X-Invsaga-Attempt"

# Webhook retries: 0.5 s, 1 s, 2 s, 4 s, 8 s, ... capped, then the delivery is failed.
WEBHOOK_MAX_ATTEMPTS = 6
WEBHOOK_INITIAL_BACKOFF = 0.5
WEBHOOK_MAX_BACKOFF = 30.0
WEBHOOK_TIMEOUT = 5.0

KIND_TO_DB = db_names(common_pb2.NotificationKind)
KIND_FROM_DB = {v: k for k, v in KIND_TO_DB.items()}

STATE_TO_PROTO = {name: value for value, name in db_names(pb.DeliveryState).items()}


def validate_context(ctx: common_pb2.StepContext) -> None:
    """The step context's ids as the barrier's columns hold them."""
    v = Violations()
    check_id(v, "context.saga_id", ctx.saga_id, required=False)
    if "\x00" in ctx.saga_id:
        v.add("context.saga_id", "must not contain NUL")
    v.raise_if_any("invalid step context")


def validate_notification(source: pb.NotifyInput | pb.SendNotificationRequest, prefix: str = "") -> None:
    """Checks of what a notification says; the step's input and SendNotification share the
    field names, and ``prefix`` locates the fields in the request ("notify." in Execute)."""
    v = Violations()
    check_id(v, f"{prefix}saga_id", getattr(source, "saga_id", ""), required=False)
    for name in ("saga_id", "order_id", "customer_id", "message"):
        if "\x00" in getattr(source, name, ""):
            v.add(f"{prefix}{name}", "must not contain NUL")
    if any("\x00" in key or "\x00" in value for key, value in source.attributes.items()):
        v.add(f"{prefix}attributes", "must not contain NUL")
    if source.kind == common_pb2.NOTIFICATION_KIND_UNSPECIFIED:
        v.add(f"{prefix}kind", "required")
    elif source.kind not in KIND_TO_DB:
        v.add(f"{prefix}kind", "unknown notification kind")
    for name in ("order_id", "customer_id", "message"):
        check_id(v, f"{prefix}{name}", getattr(source, name), limit=MAX_TEXT, required=False)
    if len(source.attributes) > MAX_ATTRIBUTES:
        v.add(f"{prefix}attributes", f"at most {MAX_ATTRIBUTES} entries")
    for key, value in source.attributes.items():
        if not key or len(key) > MAX_TEXT:
            v.add(f"{prefix}attributes", f"keys must be 1 to {MAX_TEXT} characters")
        if len(value) > MAX_TEXT:
            v.add(f"{prefix}attributes[{key[:MAX_TEXT].replace(chr(0), '?')}]", f"at most {MAX_TEXT} characters")
    v.raise_if_any("invalid notification")


def webhook_body(notification: pb.Notification) -> bytes:
    """The JSON a webhook receives: the notification without its delivery bookkeeping.

    Field names are the proto names (``notification_id``, ``saga_id``, ``kind`` as the enum
    name, ``created_at`` as RFC 3339), so receivers can parse it with the published proto.
    """
    payload = pb.Notification()
    payload.CopyFrom(notification)
    payload.ClearField("deliveries")
    as_dict = json_format.MessageToDict(payload, preserving_proto_field_name=True)
    return json.dumps(as_dict, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of the exact body bytes>``, the value of ``X-Invsaga-Signature``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def backoff(attempts: int) -> float:
    """Seconds before the next try, after ``attempts`` failed tries (1 → 0.5 s, 2 → 1 s, ...)."""
    return min(WEBHOOK_INITIAL_BACKOFF * 2 ** (attempts - 1), WEBHOOK_MAX_BACKOFF)


def log_line(notification: pb.Notification) -> str:
    kind = common_pb2.NotificationKind.Name(notification.kind).removeprefix("NOTIFICATION_KIND_")
    parts = [f"notification {notification.notification_id} {kind}"]
    if notification.order_id:
        parts.append(f"order={notification.order_id}")
    if notification.customer_id:
        parts.append(f"customer={notification.customer_id}")
    parts.extend(f"{k}={v}" for k, v in sorted(notification.attributes.items()))
    return " ".join(parts) + (f": {notification.message}" if notification.message else "")


# -- secrets: webhook URLs may carry credentials (``https://user:pass@host/path?key=...``) ----


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: what any answer or log line may show of a webhook.

    The user, password, query and fragment are left out. The full URL is used only to post.
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<webhook>"
    if not parts.scheme or not host:
        return "<webhook>"
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port is not None else ''}{parts.path}"


def url_secrets(url: str) -> list[str]:
    """The parts of ``url`` that are secret, in the forms a log line may show them."""
    try:
        parts = urlsplit(url)
        found = [parts.username or "", parts.password or "", parts.query, parts.fragment]
        found += [value for _, value in parse_qsl(parts.query, keep_blank_values=True)]
        userinfo = parts.netloc.rpartition("@")[0]
    except ValueError:
        return [url]
    found.append(userinfo)
    found += [unquote(s) for s in found]
    return [s for s in found if len(s) >= 4]


class RedactingFormatter(logging.Formatter):
    """Wraps a handler's formatter: the configured webhook URLs and secrets never reach a log.

    Each full URL becomes its ``redact_url`` form, then any remaining secret part (user,
    password, query values, the signing key) becomes ``***``, in the message and in any
    traceback alike. The code logs redacted URLs already; this catches what libraries log.
    """

    def __init__(self, inner: logging.Formatter, urls: tuple[str, ...], secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.inner = inner
        self.urls = sorted(set(urls), key=len, reverse=True)
        found = {s for url in urls for s in url_secrets(url)} | {s for s in secrets if s}
        self.secrets = sorted(found, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for url in self.urls:
            if url in text:
                text = text.replace(url, redact_url(url))
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return text

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(self.inner.format(record))


def redact_logs(urls: tuple[str, ...], secrets: tuple[str, ...] = ()) -> None:
    """Put every handler of the root logger behind a ``RedactingFormatter``, and keep the HTTP
    client's own request lines (which show full URLs) out of the log."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not urls and not any(secrets):
        return
    for handler in logging.getLogger().handlers:
        inner = handler.formatter or logging.Formatter()
        if isinstance(inner, RedactingFormatter):
            inner = inner.inner
        handler.setFormatter(RedactingFormatter(inner, urls, secrets))


def delivery_error(exc: BaseException) -> str:
    """What a delivery's ``last_error`` says of a failed post: a code, never a URL or class name."""
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, (httpx.TransportError, httpx.HTTPError)):
        return "transport error"
    return "delivery error"
