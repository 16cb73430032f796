"""OpenPGP key pairs for the tests: a structure's recovery key and keys the portal refuses.
Generated once per session (ed25519/cv25519: fast)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gnupg


@dataclass(frozen=True)
class Keys:
    gpg: gnupg.GPG  # holds the secret halves: decrypts what the portal encrypted
    public: str
    fingerprint: str
    secret: str
    other_public: str
    sign_only: str
    expired: str


def _generate(gpg: gnupg.GPG, *, encrypt: bool = True, **extra: str) -> str:
    params: dict[str, Any] = {
        "key_type": "EDDSA",
        "key_curve": "ed25519",
        "name_real": "EHPAD Les Tilleuls (recouvrement)",
        "name_email": "direction@ehpad-les-tilleuls.fr",
        "no_protection": True,
        **extra,
    }
    if encrypt:
        params.update(subkey_type="ECDH", subkey_curve="cv25519")
    key = gpg.gen_key(gpg.gen_key_input(**params))
    assert key.fingerprint, key.stderr
    return str(key.fingerprint)


@contextmanager
def recovery_keys_in(home: Path) -> Iterator[Keys]:
    """A structure's recovery key pair and a few keys the portal must refuse."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    gpg = gnupg.GPG(gnupghome=str(home))
    try:
        fingerprint = _generate(gpg)
        other = _generate(gpg)
        sign_only = _generate(gpg, encrypt=False)
        in_2020 = gnupg.GPG(gnupghome=str(home), options=["--faked-system-time", "20200101T000000"])
        expired = _generate(in_2020, expire_date="1d")
        yield Keys(
            gpg=gpg,
            public=gpg.export_keys(fingerprint),
            fingerprint=fingerprint,
            secret=gpg.export_keys(fingerprint, secret=True, expect_passphrase=False),
            other_public=gpg.export_keys(other),
            sign_only=gpg.export_keys(sign_only),
            expired=gpg.export_keys(expired),
        )
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
