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


class ControlCharacters(PortalError):
    """A value bound for the message store holds a C0 control character or DEL: refused,
    never sent (a CR/LF would end the IMAP command and start another one)."""

    user_message = (
        "La demande contient un retour à la ligne ou un caractère de contrôle, qui ne sont pas "
        "permis ici : corrigez la saisie puis recommencez."
    )
    code = "control_characters"
    http_status = 400


class RightMissing(PortalError):
    """The person may use this BAL but does not hold the right this action needs
    (mailboxes.access.require names which, in French)."""

    user_message = "Vous n'avez pas le droit de faire cela dans cette boîte aux lettres."
    code = "right_missing"
    http_status = 403


class FolderInvalid(PortalError):
    user_message = "Ce dossier n'existe pas dans cette boîte aux lettres."
    code = "folder_invalid"
    http_status = 404


class FolderNameInvalid(PortalError):
    user_message = (
        "Nom de dossier invalide : 1 à 60 caractères, sans « / », « * », « % », guillemet ni "
        "barre oblique inverse."
    )
    code = "folder_name_invalid"
    http_status = 400


class FolderExists(PortalError):
    user_message = "Un dossier de ce nom existe déjà dans cette boîte aux lettres."
    code = "folder_exists"
    http_status = 409


class FolderProtected(PortalError):
    user_message = (
        "Les dossiers que toute BAL possède (boîte de réception, envoyés, brouillons, "
        "corbeille…) ne peuvent être ni renommés ni supprimés."
    )
    code = "folder_protected"
    http_status = 409


class FolderNotEmpty(PortalError):
    user_message = (
        "Ce dossier contient encore des messages : déplacez-les ou mettez-les à la corbeille, "
        "puis supprimez le dossier."
    )
    code = "folder_not_empty"
    http_status = 409


class RecoveryKeyMissing(PortalError):
    user_message = (
        "Aucune clé de recouvrement n'est enregistrée pour la structure : déposez la clé "
        "publique OpenPGP de la structure dans la console avant d'exporter ou de fermer une BAL."
    )
    code = "recovery_key_missing"
    http_status = 409


class RecoveryKeyUnusable(PortalError):
    user_message = (
        "La clé de recouvrement de la structure ne permet plus de chiffrer (expirée ou "
        "révoquée) : déposez une nouvelle clé publique OpenPGP dans la console, puis "
        "recommencez."
    )
    code = "recovery_key_unusable"
    http_status = 409


class HandoverUnavailable(PortalError):
    """« Je m'en occupe » needs a team BAL and a message with a Message-ID to follow."""

    user_message = (
        "La prise en charge n'existe que pour les messages d'une BAL d'équipe "
        "(organisationnelle ou applicative) qui portent un identifiant."
    )
    code = "handover_unavailable"
    http_status = 409
