"""Notify rules: input validation, the webhook payload and signature, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import json

from google.protobuf import json_format

from invsaga.common.v1 import common_pb2
from invsaga.notify.v1 import notify_pb2 as pb
from invsaga.runtime.errors import Violations

MAX_TEXT = 256
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

KIND_TO_DB = {
    common_pb2.NOTIFICATION_KIND_RESERVATION_CONFIRMED: "reservation_confirmed",
    common_pb2.NOTIFICATION_KIND_RESERVATION_FAILED: "reservation_failed",
    common_pb2.NOTIFICATION_KIND_LOCK_EXPIRED: "lock_expired",
    common_pb2.NOTIFICATION_KIND_ALLOCATION_EXPIRED: "allocation_expired",
}
KIND_FROM_DB = {v: k for k, v in KIND_TO_DB.items()}

STATE_TO_PROTO = {
    "pending": pb.DELIVERY_STATE_PENDING,
    "delivered": pb.DELIVERY_STATE_DELIVERED,
    "failed": pb.DELIVERY_STATE_FAILED,
}


def validate_notification(source: pb.NotifyInput | pb.SendNotificationRequest, prefix: str = "") -> None:
    """Checks of what a notification says; the step's input and SendNotification share the
    field names, and ``prefix`` locates the fields in the request ("notify." in Execute)."""
    v = Violations()
    if len(getattr(source, "saga_id", "")) > 64:
        v.add(f"{prefix}saga_id", "at most 64 characters")
    if source.kind == common_pb2.NOTIFICATION_KIND_UNSPECIFIED:
        v.add(f"{prefix}kind", "required")
    elif source.kind not in KIND_TO_DB:
        v.add(f"{prefix}kind", "unknown notification kind")
    for name in ("order_id", "customer_id", "message"):
        if len(getattr(source, name)) > MAX_TEXT:
            v.add(f"{prefix}{name}", f"at most {MAX_TEXT} characters")
    if len(source.attributes) > MAX_ATTRIBUTES:
        v.add(f"{prefix}attributes", f"at most {MAX_ATTRIBUTES} entries")
    for key, value in source.attributes.items():
        if not key or len(key) > MAX_TEXT:
            v.add(f"{prefix}attributes", f"keys must be 1 to {MAX_TEXT} characters")
        if len(value) > MAX_TEXT:
            v.add(f"{prefix}attributes[{key[:MAX_TEXT]}]", f"at most {MAX_TEXT} characters")
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


def verify(secret: str, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), header)


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
