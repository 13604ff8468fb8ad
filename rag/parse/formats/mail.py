"""E-mail (.eml, read by the standard library's email package) and the layout every mail shares (an
Outlook .msg is read into the same shape by rag.parse.formats.outlook).

A mail is indexed as one document: its headers (From, To, Cc, Date, Subject, and the names of its
attachments), then its body, then each attachment that sightline reads, as sections headed by the
attachment's name (``report.pdf › heading``). An attachment is part of the mail's document rather than a
document of its own: a document is one file on disk (its path, sha256 and sync state), and giving parts
of a file their own rows is a schema change; the name in every attachment chunk's heading is what links
its evidence to the mail. Attachments sightline cannot read are listed by name only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rag.parse.formats.common import Builder, Parsed, malformed, one_line
from rag.parse.formats.html import parse_html
from rag.types import LoadError

if TYPE_CHECKING:
    from email.message import EmailMessage, MIMEPart

AttachmentReader = Callable[[str, bytes], Parsed]
"""Parses an attachment by its file name (and content, for a name without a known suffix); raises
`LoadError` for one that sightline does not read."""

MAX_DEPTH = 3  # a mail attached to a mail attached to a mail: deeper ones are listed by name only
MAX_ATTACHMENTS = 200
_HEADERS = ("From", "To", "Cc", "Date", "Subject")
_depth: ContextVar[int] = ContextVar("mail_depth", default=0)  # per thread: load() may run in several


@dataclass
class Mail:
    """What any mail format is read into."""

    headers: dict[str, str]
    body: str
    attachments: list[tuple[str, bytes | None]] = field(default_factory=list)  # None: not readable


@contextmanager
def nested() -> Iterator[bool]:
    """True while this mail is shallow enough that its attachments are read."""
    token = _depth.set(_depth.get() + 1)
    try:
        yield _depth.get() <= MAX_DEPTH
    finally:
        _depth.reset(token)


def mail_document(mail: Mail, read_attachment: AttachmentReader | None) -> Parsed:
    """Headers, body and readable attachments (each a labelled block): see the module's docstring."""
    builder = Builder()
    lines = [f"{name}: {one_line(value)}" for name in _HEADERS if (value := mail.headers.get(name, ""))]
    names = [name for name, _ in mail.attachments[:MAX_ATTACHMENTS]]
    if names:
        lines.append("Attachments: " + ", ".join(names))
    if len(mail.attachments) > MAX_ATTACHMENTS:
        lines[-1] += f" and {len(mail.attachments) - MAX_ATTACHMENTS:,} more"
    builder.add("\n".join(lines))
    builder.add(mail.body)
    for name, data in mail.attachments[:MAX_ATTACHMENTS]:
        if data is None or read_attachment is None:
            continue
        try:
            text, _, sections = read_attachment(name, data)
        except LoadError:
            continue  # named in the Attachments line; its content is not text sightline reads
        builder.extend(text, sections, label=name)
    text, sections = builder.build()
    return text, one_line(mail.headers.get("Subject", "")) or None, sections


def parse_eml(data: bytes, read_attachment: AttachmentReader | None = None) -> Parsed:
    """An RFC 822 message: the plain-text body (the HTML one's text when there is none), attachments
    (an attached .eml too) by name and, when readable, by content."""
    import email
    import email.policy
    from email.message import EmailMessage, Message

    with nested() as shallow, malformed("e-mail"):
        message = email.message_from_bytes(data, _class=EmailMessage, policy=email.policy.default)
        if not any(message.get(h) for h in (*_HEADERS, "Message-ID", "Received")):
            raise LoadError("not an e-mail message: it has none of From, To, Date, Subject")
        headers = {name: _header(message, name) for name in _HEADERS}
        body = ""
        part = message.get_body(preferencelist=("plain", "html"))
        if part is not None:
            body = _part_text(part)
            if part.get_content_type() == "text/html":
                body = html_text(body)
        attachments: list[tuple[str, bytes | None]] = []
        for number, attachment in enumerate(message.iter_attachments(), start=1):
            name = attachment.get_filename() or f"attachment {number}"
            if attachment.get_content_type() == "message/rfc822":
                inner = attachment.get_payload(0) if attachment.is_multipart() else None
                content = inner.as_bytes() if isinstance(inner, Message) else None
                name = name if name.lower().endswith(".eml") else f"{name}.eml"
            else:
                payload = attachment.get_payload(decode=True)
                content = payload if isinstance(payload, bytes) else None
            attachments.append((name, content if shallow else None))
        return mail_document(Mail(headers, body, attachments), read_attachment)  # attachments: one deeper


def _header(message: EmailMessage, name: str) -> str:
    """A header decoded (RFC 2047 words included); a malformed one as its raw text, never an error."""
    try:
        return str(message.get(name) or "")
    except Exception:  # the policy's parser rejects some headers only when they are read
        return " ".join(str(v) for v in message.get_all(name, failobj=[]))


def _part_text(part: MIMEPart) -> str:
    try:
        return str(part.get_content())
    except (LookupError, UnicodeError, AssertionError):  # an unknown or lying charset: keep the bytes
        payload = part.get_payload(decode=True) or b""
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)


def html_text(html: str) -> str:
    """An HTML body's visible text."""
    try:
        return parse_html(html.encode("utf-8"))[0]
    except LoadError:
        return ""
