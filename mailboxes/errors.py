"""Domain errors of the mailboxes app (see mssante_portal.errors.PortalError)."""

from __future__ import annotations

from mssante_portal.errors import PortalError


class StoreUnavailable(PortalError):
    user_message = (
        "La messagerie est momentanément indisponible. Vos messages sont conservés : "
        "réessayez dans quelques instants."
    )
    code = "store_unavailable"
    http_status = 503
    permanent = False


class MailboxSuspended(PortalError):
    user_message = (
        "Cette boîte aux lettres est suspendue : elle reste consultable mais aucune "
        "modification n'est possible. Contactez la direction de votre structure."
    )
    code = "mailbox_suspended"
    http_status = 403


class FolderInvalid(PortalError):
    user_message = "Ce dossier n'existe pas dans cette boîte aux lettres."
    code = "folder_invalid"
    http_status = 404
