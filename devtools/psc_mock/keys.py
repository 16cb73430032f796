"""The mock's RSA signing key, generated on first use under var/ (never in the repository)."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings


def _b64(n: int) -> str:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    jwk = {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)}
    # RFC 7638 thumbprint as kid
    thumb = hashlib.sha256(json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode()).digest()
    return {
        **jwk,
        "kid": base64.urlsafe_b64encode(thumb).rstrip(b"=").decode(),
        "alg": "RS256",
        "use": "sig",
    }


def _path() -> Path:
    return Path(settings.VAR_DIR) / "psc_mock" / "signing-key.pem"


@lru_cache(maxsize=1)
def signing_key() -> rsa.RSAPrivateKey:
    path = _path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded


@lru_cache(maxsize=1)
def rogue_key() -> rsa.RSAPrivateKey:
    """A key the JWKS does not publish (fault "unknown_kid")."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
