"""Certificates: the fake default certificate, TLS Secrets on disk, and what a certificate covers.

ingress-nginx generates ``CN=Kubernetes Ingress Controller Fake Certificate, O=Acme Co`` (SAN
``ingress.local``, one year, RSA 2048) at start and serves it wherever it has no usable
certificate. Secrets are written as one PEM (cert + key) per Secret, named by content hash so a
configuration that fails ``nginx -t`` never loses the files the running one uses. The ``openssl``
CLI reads them (no Python crypto dependency); results are cached by content.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from clusters.errors import CommandFailed
from clusters.lab.programs.ingress.render import CertFiles
from clusters.proc import run

log = logging.getLogger(__name__)

OPENSSL = "openssl"
FAKE_SUBJECT = "/O=Acme Co/CN=Kubernetes Ingress Controller Fake Certificate"
FAKE_SAN = "subjectAltName=DNS:ingress.local"
TIMEOUT = 30.0


class CertError(Exception):
    """A Secret's data is not a usable certificate + key (ingress-nginx drops it from its store)."""


@dataclass(frozen=True)
class CertInfo:
    files: CertFiles
    common_name: str
    dns_names: tuple[str, ...]
    not_after: datetime


def generate_fake(directory: Path) -> CertFiles:
    directory.mkdir(parents=True, exist_ok=True)
    key, crt = directory / "default-fake-certificate.key", directory / "default-fake-certificate.crt"
    run(
        [
            OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "365",
            "-subj", FAKE_SUBJECT, "-addext", FAKE_SAN, "-keyout", str(key), "-out", str(crt),
        ],
        timeout=TIMEOUT,
    )  # fmt: skip
    os.chmod(key, 0o600)
    return CertFiles(str(crt), str(key))


def secret_pems(secret: dict[str, object]) -> tuple[bytes, bytes]:
    """``tls.crt`` and ``tls.key`` of a Secret, decoded; :class:`CertError` when absent or bad."""
    data = secret.get("data") or {}
    if not isinstance(data, dict):
        raise CertError("secret has no data")
    try:
        crt = base64.b64decode(str(data.get("tls.crt") or ""), validate=True)
        key = base64.b64decode(str(data.get("tls.key") or ""), validate=True)
    except ValueError as err:
        raise CertError(f"bad base64 in secret data: {err}") from None
    if not crt:
        raise CertError("key 'tls.crt' missing or empty")
    if not key:
        raise CertError("key 'tls.key' missing or empty")
    return crt, key


class CertStore:
    """TLS Secrets as PEM files under ``directory``; inspection cached by content hash."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        self._cache: dict[str, CertInfo] = {}

    def load(self, secret_key: str, crt: bytes, key: bytes) -> CertInfo:
        digest = hashlib.sha256(crt + b"\0" + key).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        info = self._inspect(secret_key, digest, crt, key)
        self._cache[digest] = info
        return info

    def _inspect(self, secret_key: str, digest: str, crt: bytes, key: bytes) -> CertInfo:
        try:
            text = run(
                [OPENSSL, "x509", "-noout", "-subject", "-enddate", "-ext", "subjectAltName",
                 "-nameopt", "multiline"],
                timeout=TIMEOUT, stdin=crt,
            ).stdout  # fmt: skip
            cert_pub = run([OPENSSL, "x509", "-noout", "-pubkey"], timeout=TIMEOUT, stdin=crt).stdout
            key_pub = run([OPENSSL, "pkey", "-pubout"], timeout=TIMEOUT, stdin=key).stdout
        except CommandFailed as err:
            raise CertError(f"unexpected error creating SSL Cert: {_last_line(str(err))}") from None
        if cert_pub.strip() != key_pub.strip():
            raise CertError("tls: private key does not match public key")
        name = secret_key.replace("/", "-")
        path = self.directory / f"{name}-{digest[:12]}.pem"
        if not path.exists():
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(crt.rstrip(b"\n") + b"\n" + key)
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        return CertInfo(
            files=CertFiles(str(path), str(path)),
            common_name=_common_name(text),
            dns_names=_dns_names(text),
            not_after=_not_after(text),
        )

    def prune(self, keep: set[str]) -> None:
        """Delete PEMs no configuration uses any more (called after a successful reload)."""
        for path in self.directory.glob("*.pem"):
            if str(path) not in keep:
                path.unlink(missing_ok=True)


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else text


def _common_name(text: str) -> str:
    m = re.search(r"^\s+commonName\s+=\s(.*)$", text, re.M)
    return m.group(1).strip() if m else ""


def _dns_names(text: str) -> tuple[str, ...]:
    return tuple(re.findall(r"DNS:([^,\s]+)", text))


def _not_after(text: str) -> datetime:
    m = re.search(r"^notAfter=(.+)$", text, re.M)
    if not m:
        raise CertError("certificate has no notAfter")
    raw = " ".join(m.group(1).split())  # "Jan  2 00:00:00 2020 GMT" → single spaces
    return datetime.strptime(raw, "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def go_time(when: datetime) -> str:
    """A ``time.Time`` as Go's ``%v`` prints it: ``2020-01-02 00:00:00 +0000 UTC``."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")


def _match(pattern: str, host: str) -> bool:
    """Go's ``matchHostnames``: case-insensitive, a leading ``*`` label matches exactly one label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if not pattern or not host:
        return False
    p_labels, h_labels = pattern.split("."), host.split(".")
    if len(p_labels) != len(h_labels):
        return False
    return all(
        (i == 0 and p == "*") or p == h for i, (p, h) in enumerate(zip(p_labels, h_labels, strict=True))
    )


def verify_san(info: CertInfo, host: str) -> bool:
    """Go's ``x509.Certificate.VerifyHostname`` (SANs only since Go 1.15)."""
    return any(_match(name, host) for name in info.dns_names)


def verify_hostname(info: CertInfo, host: str) -> bool:
    """ingress-nginx's fallback: SANs when present, else the Common Name."""
    if info.dns_names:
        return verify_san(info, host)
    return _match(info.common_name, host)


def hostname_error(info: CertInfo, host: str) -> str:
    """Go's ``x509.HostnameError`` text for ``host``."""
    if not info.dns_names and _match(info.common_name, host):
        return "x509: certificate relies on legacy Common Name field, use SANs instead"
    if not info.dns_names:
        return f"x509: certificate is not valid for any names, but wanted to match {host}"
    return f"x509: certificate is valid for {', '.join(info.dns_names)}, not {host}"
