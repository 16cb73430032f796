"""Parsing of the console's forms, with French errors. No business rule here: the services
check them (and raise ValidationError with the message shown next to the form)."""

from __future__ import annotations

from datetime import datetime, time

from django import forms
from django.utils import timezone

from accounts.models import Membership
from mailboxes.documents.codes import sector_choices
from mailboxes.models import Mailbox

DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y"]
TEXT = {"class": "input"}


def set_choices(form: forms.Form, name: str, choices: list[tuple[str, str]]) -> None:
    """Fill a choice field whose options depend on the structure (people, BALs)."""
    field = form.fields[name]
    assert isinstance(field, forms.ChoiceField)
    field.choices = choices


class PersonChoice(forms.ChoiceField):
    """A person of the structure, by public id (choices filled by the view)."""


class BalCreateForm(forms.Form):
    local_part = forms.CharField(label="Adresse (partie avant @)", max_length=64)
    domain = forms.ChoiceField(label="Domaine")
    display_name = forms.CharField(label="Nom affiché", max_length=200, required=False)
    service = forms.CharField(label="Service de rattachement", max_length=200, required=False)
    description = forms.CharField(label="Description", max_length=500, required=False)
    liste_rouge = forms.BooleanField(
        label="Liste rouge (absente de l'annuaire public)", required=False
    )

    def __init__(self, *args: object, domains: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        set_choices(self, "domain", [(d, d) for d in domains])


class PerCreateForm(BalCreateForm):
    """The person is chosen at the first step (a member's public id or a national id)."""

    personne = forms.UUIDField(required=False, widget=forms.HiddenInput)
    rpps = forms.CharField(max_length=64, required=False, widget=forms.HiddenInput)


class OrgCreateForm(BalCreateForm):
    responsible = PersonChoice(label="Professionnel responsable")


class BalEditForm(forms.Form):
    display_name = forms.CharField(label="Nom affiché", max_length=200)
    service = forms.CharField(label="Service de rattachement", max_length=200, required=False)
    description = forms.CharField(label="Description", max_length=500, required=False)
    liste_rouge = forms.BooleanField(label="Liste rouge", required=False)
    responsible = PersonChoice(label="Professionnel responsable", required=False)


RIGHTS = {  # each choice and the rights it gives (mailboxes.access.Access), reading included
    "read": ("Lecture", {"can_organise": False, "can_send": False, "can_manage": False}),
    "organise": (
        "Lecture et classement",
        {"can_organise": True, "can_send": False, "can_manage": False},
    ),
    "send": (
        "Lecture, classement et envoi",
        {"can_organise": True, "can_send": True, "can_manage": False},
    ),
    "manage": (
        "Lecture, classement, envoi et gestion",
        {"can_organise": True, "can_send": True, "can_manage": True},
    ),
}


def rights_choices(*, manage: bool) -> list[tuple[str, str]]:
    """The rights a form offers: « gestion » only for ORG/APP BALs (a PER BAL's delegations
    are its holder's alone)."""
    return [(k, label) for k, (label, _flags) in RIGHTS.items() if manage or k != "manage"]


class AccessForm(forms.Form):
    """Add a member (ORG/APP) or a delegate (PER), or change their rights."""

    person = PersonChoice(label="Personne")
    rights = forms.ChoiceField(label="Droits", choices=rights_choices(manage=True))
    until = forms.DateField(
        label="Jusqu'au (inclus, facultatif)",
        input_formats=DATE_FORMATS,
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    # Set by the confirmation page: the person's current rights on the BAL are replaced.
    replace = forms.BooleanField(required=False, widget=forms.HiddenInput)

    def chosen_rights(self) -> dict[str, bool]:
        """The chosen rights as ``access_set`` takes them."""
        return dict(RIGHTS[self.cleaned_data["rights"]][1])

    def rights_words(self) -> str:
        """The chosen rights in words, for the confirmation page."""
        return str(RIGHTS[self.cleaned_data["rights"]][0])

    def expires_at(self) -> datetime | None:
        day = self.cleaned_data.get("until")
        if day is None:
            return None
        end = datetime.combine(day, time.max)
        return timezone.make_aware(end, timezone.get_current_timezone())


class StatusForm(forms.Form):
    action = forms.ChoiceField(choices=[("suspend", "suspend"), ("reactivate", "reactivate")])


class ConfirmForm(forms.Form):
    """Typing the BAL address confirms a destructive action."""

    confirm = forms.CharField(label="Recopiez l'adresse de la BAL pour confirmer", max_length=320)

    def __init__(self, *args: object, mailbox: Mailbox, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.mailbox = mailbox

    def clean_confirm(self) -> str:
        value = self.cleaned_data["confirm"].strip().lower()
        if value != self.mailbox.address:
            raise forms.ValidationError("L'adresse recopiée ne correspond pas à cette BAL.")
        return value


class NoticeForm(forms.Form):
    notice_email = forms.EmailField(
        label="Adresse de notification (hors MSSanté)", max_length=320, required=False
    )
    notice_interval_minutes = forms.IntegerField(
        label="Au plus une notification toutes les (minutes)", min_value=5, max_value=1440
    )


class InviteForm(forms.Form):
    national_id = forms.CharField(
        label="Nom ou numéro RPPS / ADELI",
        max_length=64,
        help_text="Un nom est cherché dans l'Annuaire Santé ; un numéro RPPS compte 11 chiffres "
        "(clé comprise), un numéro ADELI 9.",
    )
    # Set by the warning « l'annuaire ne connaît pas cet identifiant » : invite all the same.
    anyway = forms.BooleanField(required=False, widget=forms.HiddenInput)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class RecoveryKeyForm(forms.Form):
    armored = forms.CharField(
        label="Clé publique OpenPGP (format ASCII, « -----BEGIN PGP PUBLIC KEY BLOCK----- »)",
        max_length=200_000,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
        required=False,
    )
    file = forms.FileField(label="ou fichier de la clé (.asc)", required=False)

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        upload = data.get("file")
        text = str(data.get("armored") or "")
        if upload is not None:
            if upload.size > 200_000:
                raise forms.ValidationError("Le fichier est trop gros pour une clé publique.")
            try:
                text = upload.read().decode("ascii")
            except UnicodeDecodeError:
                raise forms.ValidationError(
                    "Déposez la clé au format ASCII (fichier .asc), pas au format binaire."
                ) from None
        if not text.strip():
            raise forms.ValidationError("Collez la clé publique ou choisissez son fichier.")
        data["armored"] = text
        return data


class JournalForm(forms.Form):
    bal = forms.ChoiceField(label="BAL", required=False)
    personne = forms.CharField(label="Personne", max_length=100, required=False)
    action = forms.ChoiceField(label="Action", required=False)
    du = forms.DateField(
        label="Du", input_formats=DATE_FORMATS, required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )  # fmt: skip
    au = forms.DateField(
        label="Au", input_formats=DATE_FORMATS, required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )  # fmt: skip
    resultat = forms.ChoiceField(
        label="Résultat",
        choices=[("", "Tous"), ("success", "Succès"), ("failure", "Échec")],
        required=False,
    )
    message_id = forms.CharField(label="Message-ID", max_length=255, required=False)
    page = forms.IntegerField(min_value=1, max_value=100_000, required=False)


class IndicatorsForm(forms.Form):
    bal = forms.ChoiceField(label="BAL", required=False)
    mois = forms.IntegerField(label="Période (mois)", min_value=1, max_value=36, required=False)


class SectorForm(forms.Form):
    """The structure's type, as its health documents name it (healthcareFacilityTypeCode)."""

    secteur = forms.ChoiceField(
        label="Type de structure (secteur d'activité)",
        help_text=(
            "Repris dans l'en-tête des documents de santé envoyés (lieu de prise en charge) "
            "et dans leurs métadonnées XDS, avec le cadre d'exercice qui en découle."
        ),
    )

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        set_choices(self, "secteur", [("", "—"), *sector_choices()])
