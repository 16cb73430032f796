"""Domain errors of the accounts app (see mssante_portal.errors.PortalError)."""

from __future__ import annotations

from mssante_portal.errors import PortalError


class NationalIdMismatch(PortalError):
    """A Pro Santé Connect identity was presented for an account keyed by another national id
    (or by none): the national id of an account is never rewritten."""

    user_message = (
        "Cette identité Pro Santé Connect n'est pas celle du compte. Connectez-vous avec "
        "votre propre carte CPS ou e-CPS."
    )
    code = "identity_mismatch"
    http_status = 403

    def __init__(self, *, account_national_id: str, presented_national_id: str) -> None:
        super().__init__()
        self.account_national_id = account_national_id
        self.presented_national_id = presented_national_id
