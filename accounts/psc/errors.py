"""Sign-in failures, each with a stable code (audit) and a French explanation (error page).

They subclass allauth's OAuth2Error so that its callback view routes them to
``PscSocialAccountAdapter.on_authentication_error``.
"""

from __future__ import annotations

from typing import Any

from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from django.utils.translation import gettext_lazy as _


class PscError(OAuth2Error):
    code = "psc_error"
    title = _("La connexion a échoué")
    explanation = _(
        "Pro Santé Connect n'a pas pu confirmer votre identité. Réessayez ; si le problème "
        "persiste, contactez le support de votre structure."
    )


class PscCancelled(PscError):
    code = "cancelled"
    title = _("Connexion annulée")
    explanation = _(
        "Vous avez annulé la connexion sur Pro Santé Connect. Aucune session n'a été ouverte. "
        "Vous pouvez vous reconnecter quand vous le souhaitez."
    )


class PscStateMismatch(PscError):
    code = "state_mismatch"
    title = _("Demande de connexion expirée ou inconnue")
    explanation = _(
        "La réponse de Pro Santé Connect ne correspond à aucune connexion en cours dans ce "
        "navigateur (onglet ancien, retour arrière ou lien reçu d'un tiers). Recommencez la "
        "connexion depuis la page d'accueil du portail."
    )


class PscNonceMismatch(PscError):
    code = "nonce_mismatch"
    title = _("Jeton d'identité refusé")
    explanation = _(
        "Le jeton reçu ne correspond pas à votre demande de connexion ; par sécurité il a été "
        "refusé. Recommencez la connexion depuis la page d'accueil."
    )


class PscIdTokenInvalid(PscError):
    code = "id_token_invalid"
    title = _("Jeton d'identité invalide")
    explanation = _(
        "La signature du jeton d'identité transmis par Pro Santé Connect n'a pas pu être "
        "vérifiée ; par sécurité il a été refusé. Recommencez la connexion ; si le problème "
        "persiste, prévenez l'opérateur du portail."
    )


class PscIdTokenExpired(PscError):
    code = "id_token_expired"
    title = _("Jeton d'identité expiré")
    explanation = _(
        "Le jeton d'identité reçu a expiré avant d'être vérifié. Vérifiez l'heure de votre "
        "poste puis recommencez la connexion."
    )


class PscUnknownSigningKey(PscError):
    code = "unknown_signing_key"
    title = _("Clé de signature inconnue")
    explanation = _(
        "Le jeton d'identité est signé par une clé que Pro Santé Connect ne publie pas ; il a "
        "été refusé. Recommencez la connexion ; si le problème persiste, prévenez l'opérateur."
    )


class PscAcrInsufficient(PscError):
    code = "acr_insufficient"
    title = _("Niveau d'authentification insuffisant")
    explanation = _(
        "Le moyen d'authentification utilisé n'offre pas le niveau requis (eIDAS substantiel). "
        "Connectez-vous avec votre carte CPS ou l'application e-CPS."
    )


class PscUserinfoInvalid(PscError):
    code = "userinfo_invalid"
    title = _("Identité professionnelle incomplète")
    explanation = _(
        "Pro Santé Connect n'a pas transmis votre identifiant national (RPPS, ADELI ou RPPS+). "
        "Sans lui le portail ne peut pas vous identifier. Vérifiez votre enregistrement dans "
        "l'Annuaire Santé auprès de votre ordre ou de votre ARS, puis réessayez."
    )


class PscUnreachable(PscError):
    code = "idp_unreachable"
    title = _("Pro Santé Connect est injoignable")
    explanation = _(
        "Le portail n'a pas pu joindre Pro Santé Connect. Le service est peut-être en "
        "maintenance : réessayez dans quelques minutes."
    )


class PscProtocolError(PscError):
    code = "protocol_error"


class PscIdpError(PscError):
    code = "idp_error"
    title = _("Pro Santé Connect a refusé la connexion")


class PscProcessRefused(PscError):
    """allauth's ``connect`` and ``redirect`` processes (and anything but a plain sign-in)."""

    code = "process_refused"
    title = _("Cette connexion n'est pas possible")
    explanation = _(
        "Le portail n'accepte qu'une connexion simple avec Pro Santé Connect : une identité "
        "ne peut pas être rattachée au compte d'une autre personne. Pour utiliser votre "
        "propre compte, déconnectez-vous puis connectez-vous avec votre carte CPS ou e-CPS."
    )


class PscIdentityMismatch(PscError):
    """The PSC identity points at an account keyed by another national id."""

    code = "identity_mismatch"
    title = _("Identité Pro Santé Connect différente du compte")
    explanation = _(
        "Cette identité Pro Santé Connect est rattachée à un compte dont l'identifiant "
        "national est différent ; par sécurité la connexion a été refusée et signalée. "
        "Contactez le support de votre structure en indiquant l'heure de votre tentative."
    )

    def __init__(self, *, account: Any, national_id: str) -> None:
        super().__init__(f"identity {national_id} is linked to another account")
        self.account = account
        self.national_id = national_id


class PscAuthNotFresh(PscError):
    """PSC answered with an authentication older than the request (prompt=login ignored)."""

    code = "auth_not_fresh"
    title = _("Connexion Pro Santé Connect non renouvelée")
    explanation = _(
        "Pro Santé Connect a répondu sans vous redemander votre carte CPS ou votre e-CPS ; le "
        "portail exige une authentification faite à l'instant, elle a donc été refusée. "
        "Recommencez la connexion ; si le problème persiste, déconnectez-vous de Pro Santé "
        "Connect puis réessayez."
    )
