"""Notice texts within the notify service's limits, whatever the lengths of what they quote."""

from __future__ import annotations

# The notify service refuses any text field longer than this (``services.notify.logic.MAX_TEXT``,
# SPEC §6): every notice is built to fit it, so that a long order id can never lose a notice.
NOTICE_TEXT_LIMIT = 256
ELLIPSIS = "…"
# An order id shortened in a notice's text keeps at least this many characters.
MIN_ORDER_CHARS = 16


def clip_text(text: str, limit: int = NOTICE_TEXT_LIMIT) -> str:
    """``text`` within ``limit`` characters, a cut one ending with an ellipsis; NULs replaced
    (PostgreSQL stores no NUL in text, and a notice must never fail on one)."""
    text = text.replace("\x00", "\ufffd")
    if len(text) <= limit:
        return text
    return text[: max(0, limit - 1)] + ELLIPSIS if limit > 0 else ""


def notice_text(head: str, order_id: str, tail: str, detail: str = "", limit: int = NOTICE_TEXT_LIMIT) -> str:
    """``head + order_id + tail + detail`` within ``limit`` characters, whatever their lengths.

    What gives way, in this order: the detail (cut with an ellipsis, or left out), then the
    order id (shortened with an ellipsis, down to ``MIN_ORDER_CHARS``), then the end of the text.
    """
    head, order_id, tail, detail = (t.replace("\x00", "\ufffd") for t in (head, order_id, tail, detail))
    fixed = len(head) + len(tail)
    room = limit - fixed - len(order_id)
    if room >= len(detail):
        return head + order_id + tail + detail
    if room > len(ELLIPSIS):
        return head + order_id + tail + clip_text(detail, room)
    if limit - fixed >= MIN_ORDER_CHARS:
        return head + clip_text(order_id, limit - fixed) + tail
    return clip_text(head + clip_text(order_id, MIN_ORDER_CHARS) + tail, limit)
