"""Outlook .msg files, read with olefile (BSD) into the shape every mail has (rag.parse.formats.mail).

Not extract-msg, the usual reader, because its licence is the GPL. A .msg is an OLE compound file whose
MAPI properties are streams named by property tag (``__substg1.0_0037001F``: the subject, UTF-16), and
whose attachments and embedded messages are storages of the same kind; the dozen properties a mail's
text needs are read here by name. A body kept only as compressed RTF (some very old Outlook files) is
not decompressed: such a mail is read for its headers and attachments."""

from __future__ import annotations

import datetime as dt
import email.utils
import struct
from typing import Any

from rag.parse.formats.common import OLE_MAGIC, Parsed, malformed
from rag.parse.formats.mail import AttachmentReader, Mail, html_text, mail_document, nested
from rag.types import LoadError

_SUBJECT, _SENDER_NAME, _SENDER_EMAIL, _SENDER_SMTP = 0x0037, 0x0C1A, 0x0C1F, 0x5D01
_DISPLAY_TO, _DISPLAY_CC, _HEADERS, _BODY, _HTML = 0x0E04, 0x0E03, 0x007D, 0x1000, 0x1013
_ATTACH_LONG_NAME, _ATTACH_NAME, _ATTACH_DATA = 0x3707, 0x3704, 0x3701
_SUBMIT_TIME, _DELIVERY_TIME = 0x00390040, 0x0E060040  # full tags: PT_SYSTIME values
_FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


def parse_msg(data: bytes, read_attachment: AttachmentReader | None = None) -> Parsed:
    if not data.startswith(OLE_MAGIC):
        raise LoadError("not an Outlook .msg file: it is not an OLE compound file")
    import olefile

    with nested() as shallow, malformed("Outlook .msg"):
        ole = olefile.OleFileIO(data)
        try:
            if not ole.exists("__properties_version1.0"):
                raise LoadError("not an Outlook .msg file: it has no MAPI properties")
            mail = _read(_Storage(ole, "", len(data)), top=True, shallow=shallow)
        finally:
            ole.close()
        return mail_document(mail, read_attachment)  # its attachments are read one level deeper


class _Storage:
    """The properties of one message (or attachment) storage inside the file."""

    def __init__(self, ole: Any, prefix: str, limit: int) -> None:
        self.ole, self.prefix, self.limit = ole, prefix, limit

    def stream(self, name: str) -> bytes | None:
        path = self.prefix + name
        if not self.ole.exists(path):
            return None
        if self.ole.get_size(path) > self.limit:  # nothing uncompressed holds more than the file's size
            raise LoadError(f"damaged Outlook .msg file: stream {path!r} is larger than the file")
        return bytes(self.ole.openstream(path).read())

    def text(self, prop: int) -> str:
        unicode = self.stream(f"__substg1.0_{prop:04X}001F")
        if unicode is not None:
            return unicode.decode("utf-16-le", "replace").rstrip("\x00")
        eight_bit = self.stream(f"__substg1.0_{prop:04X}001E")
        return eight_bit.decode("cp1252", "replace").rstrip("\x00") if eight_bit is not None else ""

    def binary(self, prop: int) -> bytes | None:
        return self.stream(f"__substg1.0_{prop:04X}0102")

    def time(self, tag: int, header_bytes: int) -> str:
        """A PT_SYSTIME property from the fixed-size entries of the properties stream."""
        table = self.stream("__properties_version1.0") or b""
        for offset in range(header_bytes, len(table) - 15, 16):
            entry_tag, _, value = struct.unpack_from("<IIQ", table, offset)
            if entry_tag == tag and value:
                when = _FILETIME_EPOCH + dt.timedelta(microseconds=value // 10)
                return email.utils.format_datetime(when)
        return ""

    def children(self, kind: str) -> list[str]:
        """Sub-storages such as ``__attach_version1.0_#00000000``, in order."""
        depth = self.prefix.count("/")
        names = {
            "/".join(entry[: depth + 1]) + "/"
            for entry in self.ole.listdir(streams=True, storages=True)
            if len(entry) > depth
            and "/".join(entry[:depth]) + "/" * bool(depth) == self.prefix
            and entry[depth].startswith(kind)
        }
        return sorted(names)


def _read(storage: _Storage, top: bool, shallow: bool) -> Mail:
    """A message's headers, body and attachments; ``shallow``: the attachments' content is read too."""
    headers_text = storage.text(_HEADERS)
    sender = storage.text(_SENDER_NAME)
    address = storage.text(_SENDER_SMTP) or storage.text(_SENDER_EMAIL)
    if address and address not in sender:
        sender = f"{sender} <{address}>" if sender else address
    date = _transport_date(headers_text) or storage.time(_SUBMIT_TIME, 32 if top else 24)
    date = date or storage.time(_DELIVERY_TIME, 32 if top else 24)
    headers = {
        "From": sender,
        "To": storage.text(_DISPLAY_TO),
        "Cc": storage.text(_DISPLAY_CC),
        "Date": date,
        "Subject": storage.text(_SUBJECT),
    }
    body = storage.text(_BODY)
    if not body.strip():
        html = storage.binary(_HTML)
        body = html_text(html.decode("utf-8", "replace")) if html else html_text(storage.text(_HTML))
    attachments: list[tuple[str, bytes | None]] = []
    for number, prefix in enumerate(storage.children("__attach_version1.0_"), start=1):
        attachment = _Storage(storage.ole, prefix, storage.limit)
        name = attachment.text(_ATTACH_LONG_NAME) or attachment.text(_ATTACH_NAME)
        content = attachment.binary(_ATTACH_DATA) if shallow else None
        embedded = f"{prefix}__substg1.0_3701000D/"
        if shallow and storage.ole.exists(embedded.rstrip("/")):
            with nested() as inner_shallow:
                inner = _read(_Storage(storage.ole, embedded, storage.limit), False, inner_shallow)
            name = name or inner.headers.get("Subject") or f"message {number}"
            attachments.append((f"{name}.eml", _as_eml(inner)))
            continue
        attachments.append((name or f"attachment {number}", content))
    return Mail(headers, body, attachments)


def _transport_date(headers: str) -> str:
    for line in headers.splitlines():
        if line.lower().startswith("date:"):
            return line[5:].strip()
    return ""


def _as_eml(mail: Mail) -> bytes:
    """An embedded message handed to the attachment reader as the .eml it is equivalent to."""
    from email.message import EmailMessage

    message = EmailMessage()
    for name, value in mail.headers.items():
        if not value:
            continue
        try:
            message[name] = " ".join(value.split())
        except (ValueError, TypeError, IndexError):  # "Jo; Al" is no address list: keep what parses
            del message[name]
    message.set_content(mail.body or " ")
    for name, content in mail.attachments:
        if content is not None:
            message.add_attachment(content, maintype="application", subtype="octet-stream", filename=name)
    return message.as_bytes()
