"""netexec's ``/upload``: store the multipart field ``file`` (kept out of the start path: it needs email)."""

from __future__ import annotations

import os
import tempfile
from email.parser import BytesParser
from email.policy import HTTP

from clusters.lab.programs.agnhost.httpserve import Request


def _file_field(req: Request) -> bytes | None:
    ctype = req.header("Content-Type")
    if not ctype.startswith("multipart/form-data"):
        return None
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + req.body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else b""
    return None


def save(req: Request, directory: str | None) -> tuple[str, str]:
    """Write the upload like agnhost (``/uploads/upload*``, mode 0700); return (path, error)."""
    data = _file_field(req)
    if data is None:
        return "", "Unable to upload file."
    try:
        fd, path = tempfile.mkstemp(prefix="upload", dir=directory)
    except OSError:
        return "", "Unable to open file for write"
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    except OSError:
        return "", "Unable to write file."
    try:
        os.chmod(path, 0o700)
    except OSError:
        return "", "Unable to chmod file."
    return path, ""
