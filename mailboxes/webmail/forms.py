"""Parsing of webmail requests: query strings and action posts, with French errors."""

from __future__ import annotations

import re
from email.utils import getaddresses
from typing import Any

from django import forms
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.utils import timezone
from django.utils.formats import number_format

from annuaire.ins import InvalidINS, parse_ins, typed_ins
from mailboxes.documents.build import DOCUMENT_TYPES
from mailboxes.errors import ControlCharacters
from mailboxes.store.imap import Criteria, has_control_characters

DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y"]
# French URL values -> store orders (mailboxes.store.imap.SORT_ORDERS, "arrival" by default)
ORDERS = {
    "reception": "arrival",
    "date": "date",
    "date-croissante": "date-asc",
    "expediteur": "sender",
    "objet": "subject",
    "taille": "size",
    "taille-croissante": "size-asc",
    "expediteur-inverse": "sender-desc",
    "objet-inverse": "subject-desc",
}
# What a list page is (besides its folder): kept by « Retour à la liste », previous / next on
# the message page and the actions on a selection.
LIST_PARAMS = (
    "page", "tri", "q", "de", "objet", "texte", "du", "au", "suivi", "nonlus", "suivis", "pj",
    "partout", "vue",
)  # fmt: skip
SEARCH_PARAMS = tuple(p for p in LIST_PARAMS if p not in ("page", "tri", "vue"))


CONTROL_ERROR = (
    "« {label} » contient un retour à la ligne ou un caractère de contrôle : retirez-le."
)


def refuse_control_characters(value: str) -> None:
    """Field validator for a value that reaches the message store (mailboxes.store.imap)."""
    if has_control_characters(value):
        raise forms.ValidationError(
            "Cette valeur contient un retour à la ligne ou un caractère de contrôle, qui ne sont "
            "pas permis.",
            code="control",
        )


class WebmailForm(forms.Form):
    """A query string or an action of the webmail: no field may hold a C0 control character
    or DEL (none is ever typed there; a CR/LF is an attempt to inject IMAP commands). Checked
    on the raw values, before a field strips or coerces them."""

    def full_clean(self) -> None:
        super().full_clean()
        if not self.is_bound:
            return
        for name, field in self.fields.items():
            raw = (
                self.data.getlist(name) if hasattr(self.data, "getlist") else [self.data.get(name)]
            )
            if any(isinstance(v, str) and has_control_characters(v) for v in raw):
                message = CONTROL_ERROR.format(label=field.label or name)
                self.add_error(name, forms.ValidationError(message, code="control"))

    def refuse_control_characters(self) -> None:
        """Raise ControlCharacters (400, its French message naming the field) when a field
        held a control character; the view then stops before the store is asked anything."""
        for errors in self.errors.as_data().values():
            for error in errors:
                if error.code == "control":
                    raise ControlCharacters(error.messages[0])


class ArrivalsQuery(WebmailForm):
    """The webmail's polling for new mail: a folder and the UIDNEXT its page was shown with."""

    dossier = forms.CharField(label="Dossier", max_length=200)
    depuis = forms.IntegerField(label="Depuis", min_value=1, max_value=2**32 - 1, required=False)


class FolderQuery(WebmailForm):
    dossier = forms.CharField(label="Dossier", max_length=200, required=False)
    page = forms.IntegerField(label="Page", min_value=1, max_value=100_000, required=False)
    tri = forms.ChoiceField(label="Tri", choices=[(k, k) for k in ORDERS], required=False)
    q = forms.CharField(label="Rechercher", max_length=200, required=False)
    nonlus = forms.BooleanField(label="Non lus", required=False)
    suivis = forms.BooleanField(label="Suivis", required=False)
    pj = forms.BooleanField(label="Avec pièces jointes", required=False)
    partout = forms.BooleanField(label="Dans tous les dossiers", required=False)
    vue = forms.ChoiceField(
        label="Vue", choices=[("conversations", "Par conversation")], required=False
    )
    de = forms.CharField(label="Expéditeur", max_length=200, required=False)
    objet = forms.CharField(label="Objet", max_length=200, required=False)
    texte = forms.CharField(label="Texte", max_length=200, required=False)
    du = forms.DateField(
        label="Du",
        input_formats=DATE_FORMATS,
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    au = forms.DateField(
        label="Au",
        input_formats=DATE_FORMATS,
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    # A team BAL's handover filter (Criteria.handling).
    suivi = forms.ChoiceField(
        label="Suivi",
        choices=[
            ("a-traiter", "À traiter"),
            ("moi", "Pris en charge par moi"),
            ("termines", "Terminés"),
        ],
        required=False,
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("du") and data.get("au") and data["du"] > data["au"]:
            self.add_error("au", "La date de fin précède la date de début.")
        return data

    @property
    def folder(self) -> str:
        return (
            self.cleaned_data.get("dossier") if self.is_bound and self.is_valid() else ""
        ) or "INBOX"

    @property
    def page_number(self) -> int:
        return (self.cleaned_data.get("page") if self.is_valid() else None) or 1

    @property
    def order(self) -> str:
        return ORDERS.get(
            (self.cleaned_data.get("tri") if self.is_valid() else "") or "reception", "arrival"
        )

    def criteria(self, mine: tuple[str, ...] = ()) -> Criteria:
        """The search; ``mine``: the Message-IDs the person has in charge (for « moi »)."""
        if not self.is_valid():
            return Criteria()
        d = self.cleaned_data
        return Criteria(
            text=d["q"].strip(),
            unread=d["nonlus"],
            flagged=d["suivis"],
            attachments=d["pj"],
            sender=d["de"],
            subject=d["objet"],
            body=d["texte"],
            since=d["du"],
            before=d["au"],
            handling=d["suivi"],
            message_ids=mine if d["suivi"] == "moi" else (),
        )

    @property
    def everywhere(self) -> bool:
        return bool(self.is_valid() and self.cleaned_data.get("partout"))

    @property
    def threaded(self) -> bool:
        """The conversation view (never with a search in every folder)."""
        if not (self.is_valid() and self.cleaned_data.get("vue") == "conversations"):
            return False
        return not (self.everywhere and not self.criteria().is_empty())

    def list_params(self, *, keep_page: bool = True) -> dict[str, str]:
        """The list's parameters as given (valid ones only), to carry in links."""
        if not self.is_bound:
            return {}
        keys = LIST_PARAMS if keep_page else (*SEARCH_PARAMS, "tri", "vue")
        self.is_valid()  # fills self.errors: a value refused is not carried
        return {k: str(self.data.get(k)) for k in keys if self.data.get(k) and k not in self.errors}


class MessageQuery(WebmailForm):
    dossier = forms.CharField(label="Dossier", max_length=200)
    images = forms.BooleanField(label="Images", required=False)


class HandoverStep(WebmailForm):
    dossier = forms.CharField(label="Dossier", max_length=200)
    etape = forms.ChoiceField(
        label="Étape",
        choices=[("prendre", "Je m'en occupe"), ("terminer", "Terminé"), ("rendre", "Rendre")],
    )


class FolderChange(WebmailForm):
    """The folders page: create a folder, rename or delete one of the BAL's own."""

    action = forms.ChoiceField(
        label="Action",
        choices=[("creer", "Créer"), ("renommer", "Renommer"), ("supprimer", "Supprimer")],
        error_messages={"invalid_choice": "Action inconnue."},
    )
    dossier = forms.CharField(label="Dossier", max_length=200, required=False)
    nom = forms.CharField(label="Nom du dossier", max_length=200, required=False, strip=False)

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        action = data.get("action")
        if action in ("creer", "renommer") and not (data.get("nom") or "").strip():
            self.add_error("nom", "Indiquez le nom du dossier.")
        if action in ("renommer", "supprimer") and not data.get("dossier"):
            self.add_error("dossier", "Choisissez le dossier.")
        return data


class RestoreRequest(WebmailForm):
    """« Annuler » after « placés dans la corbeille »: which undo (the session holds it)."""

    jeton = forms.RegexField(label="Annulation", regex=r"^[0-9a-f]{32}$")


class ReceiptAnswer(WebmailForm):
    dossier = forms.CharField(label="Dossier", max_length=200)
    reponse = forms.ChoiceField(
        label="Réponse", choices=[("envoyer", "Envoyer"), ("refuser", "Ne pas envoyer")]
    )


class ComposeQuery(WebmailForm):
    """What the compose page is opened for: a reply, a reply to all or a forward of one
    message (``mode``, ``uid``, ``dossier``), or a saved draft (``brouillon``)."""

    mode = forms.CharField(label="Mode", required=False)
    uid = forms.CharField(label="Message", required=False)
    dossier = forms.CharField(label="Dossier", required=False)
    brouillon = forms.CharField(label="Brouillon", required=False)


ACTIONS = [
    ("lu", "Marquer comme lu"),
    ("non-lu", "Marquer comme non lu"),
    ("suivi", "Marquer pour suivi"),
    ("non-suivi", "Retirer le suivi"),
    ("deplacer", "Déplacer"),
    ("supprimer", "Supprimer"),
]


class MessagesAction(WebmailForm):
    dossier = forms.CharField(label="Dossier", max_length=200)
    action = forms.ChoiceField(
        label="Action", choices=ACTIONS, error_messages={"invalid_choice": "Action inconnue."}
    )
    cible = forms.CharField(label="Dossier de destination", max_length=200, required=False)
    uids = forms.CharField(label="Messages", required=False, widget=forms.MultipleHiddenInput)
    suivant = forms.CharField(label="Page suivante", required=False)

    def __init__(self, data: Any = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        self._uids = data.getlist("uids") if data is not None and hasattr(data, "getlist") else []

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        try:
            uids = sorted({int(u) for u in self._uids})
        except (TypeError, ValueError):
            uids = []
            self.add_error(None, "Sélection de messages invalide.")
        if any(u <= 0 or u > 2**32 for u in uids):
            self.add_error(None, "Sélection de messages invalide.")
        if not uids and not self.errors:
            self.add_error(None, "Sélectionnez au moins un message.")
        if len(uids) > 500:
            self.add_error(None, "Sélectionnez au plus 500 messages à la fois.")
        if data.get("action") == "deplacer" and not data.get("cible"):
            self.add_error("cible", "Choisissez le dossier de destination.")
        data["uids"] = uids
        return data


# --- Compose ------------------------------------------------------------------------------------

MSG_ID = re.compile(r"<[^<>\s]{1,250}>")


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input (Django documentation, "Uploading multiple files")."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[UploadedFile]:
        single = super().clean
        if isinstance(data, list | tuple):
            return [single(item, initial) for item in data]
        return [single(data, initial)] if data else []


def split_addresses(value: str) -> list[str]:
    """« a@x.fr; Dr B <b@y.fr>, c@z.fr » -> the addresses (display names dropped)."""
    found = getaddresses([value.replace(";", ",").replace("\n", ",")])
    return [address.strip() or name.strip() for name, address in found if address or name]


class ComposeForm(forms.Form):
    de = forms.ChoiceField(label="De")
    a = forms.CharField(label="À", required=False, max_length=20_000)
    cc = forms.CharField(label="Cc", required=False, max_length=20_000)
    cci = forms.CharField(label="Cci", required=False, max_length=20_000)
    ins = forms.CharField(
        label="INS du patient",
        required=False,
        max_length=2000,
        help_text=(
            "15 caractères, espaces permis ; plusieurs patients séparés par des virgules. "
            "L'adresse <INS>@patient.mssante.fr est ajoutée aux destinataires."
        ),
    )
    objet = forms.CharField(label="Objet", required=False, max_length=250)
    corps = forms.CharField(
        label="Message", required=False, max_length=1_000_000, widget=forms.Textarea
    )
    pieces = MultipleFileField(label="Pièces jointes", required=False)
    # « Joindre un document de santé » (mssante-spec §3.2-§3.4): a PDF sent as a CDA level-1
    # in an IHE_XDM.ZIP; every field but the PDF is asked only when a PDF is given.
    doc_pdf = forms.FileField(label="Document (PDF)", required=False)
    doc_type = forms.ChoiceField(
        label="Type de document",
        required=False,
        choices=[("", "—"), *DOCUMENT_TYPES.items()],
    )
    doc_date_acte = forms.DateField(label="Date de l'acte", required=False)
    doc_ins = forms.CharField(
        label="Matricule INS (patient concerné)",
        required=False,
        max_length=40,
        help_text="Matricule INS, 15 caractères (espaces permis).",
    )
    doc_nom = forms.CharField(label="Nom de naissance", required=False, max_length=100)
    doc_prenom = forms.CharField(
        label="Premier prénom de naissance", required=False, max_length=100
    )
    doc_naissance = forms.DateField(label="Date de naissance", required=False)
    doc_sexe = forms.ChoiceField(
        label="Sexe",
        required=False,
        choices=[("", "—"), ("F", "Féminin"), ("M", "Masculin")],
    )
    doc_qualifiee = forms.BooleanField(
        label="Identité qualifiée (vérifiée par le téléservice INSi et une pièce d'identité)",
        required=False,
    )
    # A resumed draft holds the PDF (a browser cannot refill a file field): kept while ticked.
    doc_du_brouillon = forms.BooleanField(
        label="Joindre le document de santé enregistré avec le brouillon", required=False
    )
    accuse_remise = forms.BooleanField(label="Demander un accusé de réception", required=False)
    accuse_lecture = forms.BooleanField(label="Demander un accusé de lecture", required=False)
    bloquer_reponse = forms.BooleanField(
        label="Bloquer la réponse du patient (X-MSS-MES : FIN)", required=False
    )
    confirmation_patient = forms.BooleanField(required=False)
    en_reponse_a = forms.CharField(required=False, max_length=500, widget=forms.HiddenInput)
    references = forms.CharField(required=False, max_length=8000, widget=forms.HiddenInput)
    transfert = forms.CharField(
        required=False,
        max_length=250,
        widget=forms.HiddenInput,
        validators=[refuse_control_characters],  # « dossier:uid » of the message forwarded
    )
    # The forwarded message's text is in the body: join its attachments, not the whole .eml.
    transfert_texte = forms.BooleanField(required=False, widget=forms.HiddenInput)
    # Drafts: the draft's token (one per message being written) and its saved copy, if any.
    brouillon = forms.RegexField(regex=r"^[0-9a-f]{32}$", required=False, widget=forms.HiddenInput)
    brouillon_uid = forms.IntegerField(
        required=False, min_value=1, max_value=2**32 - 1, widget=forms.HiddenInput
    )
    action = forms.ChoiceField(
        choices=[("envoyer", "Envoyer"), ("brouillon", "Enregistrer le brouillon")],
        required=False,
    )

    def __init__(self, *args: Any, senders: list[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["de"]
        assert isinstance(field, forms.ChoiceField)
        field.choices = senders

    def clean_objet(self) -> str:
        subject = str(self.cleaned_data.get("objet") or "")
        if "\r" in subject or "\n" in subject:  # header injection (RFC 5322 §2.2)
            raise forms.ValidationError("L'objet ne peut pas contenir de saut de ligne.")
        return subject.strip()

    def clean_a(self) -> list[str]:
        return split_addresses(str(self.cleaned_data.get("a") or ""))

    def clean_cc(self) -> list[str]:
        return split_addresses(str(self.cleaned_data.get("cc") or ""))

    def clean_cci(self) -> list[str]:
        return split_addresses(str(self.cleaned_data.get("cci") or ""))

    def clean_ins(self) -> list[str]:
        """The patients' addresses: each INS as printed (spaces, dots), several allowed."""
        addresses = []
        for value in typed_ins(str(self.cleaned_data.get("ins") or "")):
            try:
                addresses.append(parse_ins(value).address)
            except InvalidINS as exc:
                raise forms.ValidationError(f"{value} : {exc}") from exc
        return addresses

    def clean_en_reponse_a(self) -> str:
        found = MSG_ID.search(str(self.cleaned_data.get("en_reponse_a") or ""))
        return found.group(0) if found else ""

    def clean_references(self) -> str:
        return " ".join(MSG_ID.findall(str(self.cleaned_data.get("references") or ""))[-30:])

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        to = [*(data.get("a") or []), *(data.get("ins") or [])]
        data["a"] = to
        everyone = {a.lower() for a in [*to, *(data.get("cc") or []), *(data.get("cci") or [])]}
        if not everyone and "a" not in self.errors and data.get("action") != "brouillon":
            self.add_error("a", "Indiquez au moins un destinataire.")
        if len(everyone) > settings.COMPOSE_MAX_RECIPIENTS:
            self.add_error(
                "a",
                f"{len(everyone)} destinataires : {settings.COMPOSE_MAX_RECIPIENTS} au plus par "
                "message. Les listes de diffusion ne sont pas permises dans MSSanté.",
            )
        self._clean_document(data)
        total = sum(f.size or 0 for f in data.get("pieces") or [])
        if data.get("doc_pdf"):
            total += data["doc_pdf"].size or 0
        if total > settings.COMPOSE_MAX_ATTACHMENT_BYTES:
            self.add_error("pieces", attachments_too_large(total))
        return data

    def _clean_document(self, data: dict[str, Any]) -> None:
        """The health document's fields, all required once a PDF is given (or kept by the
        draft, ``doc_du_brouillon``) and the message is sent; the INS checked as everywhere one
        is typed (annuaire.ins.parse_ins: length, first digit, key). A draft keeps them as
        typed, unchecked, with its PDF."""
        upload = data.get("doc_pdf")
        if upload:
            head = upload.read(5)
            upload.seek(0)
            if head != b"%PDF-":
                self.add_error("doc_pdf", "Le document de santé doit être un fichier PDF.")
        if data.get("action") == "brouillon" or not (upload or data.get("doc_du_brouillon")):
            return
        required = {
            "doc_type": "Choisissez le type du document.",
            "doc_date_acte": "Indiquez la date de l'acte.",
            "doc_ins": "Indiquez l'INS du patient.",
            "doc_nom": "Indiquez le nom de naissance du patient.",
            "doc_prenom": "Indiquez le premier prénom de naissance du patient.",
            "doc_naissance": "Indiquez la date de naissance du patient.",
            "doc_sexe": "Indiquez le sexe du patient.",
        }
        for name, message in required.items():
            if not data.get(name) and name not in self.errors:
                self.add_error(name, message)
        if data.get("doc_ins"):
            try:
                data["doc_ins"] = parse_ins(str(data["doc_ins"])).matricule
            except InvalidINS as exc:
                self.add_error("doc_ins", str(exc))
        for name in ("doc_nom", "doc_prenom"):
            if has_control_characters(str(data.get(name) or "")):
                self.add_error(name, "Ce champ contient un caractère de contrôle : retirez-le.")
        today = timezone.localdate()
        for name in ("doc_date_acte", "doc_naissance"):
            if data.get(name) and data[name] > today:
                self.add_error(name, "Cette date est dans le futur.")


def attachments_too_large(total: int) -> str:
    return (
        f"Pièces jointes : {number_format(round(total / 1048576, 1), 1)} Mo au total, "
        f"{settings.COMPOSE_MAX_ATTACHMENT_BYTES // 1048576} Mo au plus."
    )


class SignatureForm(forms.Form):
    texte = forms.CharField(
        label="Ma signature pour cette BAL",
        required=False,
        max_length=2000,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text="Texte simple, ajouté à vos nouveaux messages et à vos réponses. Vide : aucune.",
    )

    def clean_texte(self) -> str:
        text = str(self.cleaned_data.get("texte") or "")
        if has_control_characters(text.replace("\r", "").replace("\n", "").replace("\t", " ")):
            raise forms.ValidationError(
                "La signature contient un caractère de contrôle : retirez-le."
            )
        return text


class AbsenceForm(forms.Form):
    """« Message d'absence »: the dates (both included) and the text of the automatic reply."""

    # <input type="date"> takes ISO dates only (HTML §4.10.5.1.7), whatever the locale shows.
    debut = forms.DateField(
        label="Du", widget=forms.DateInput(format="%Y-%m-%d", attrs={"type": "date"})
    )
    fin = forms.DateField(
        label="Au (inclus)", widget=forms.DateInput(format="%Y-%m-%d", attrs={"type": "date"})
    )
    texte = forms.CharField(
        label="Texte de la réponse",
        max_length=4000,
        strip=False,
        widget=forms.Textarea(attrs={"rows": 6}),
        help_text=(
            "Envoyé une fois par expéditeur pendant la période, jamais aux patients, aux listes "
            "ni aux avis automatiques. Les messages restent dans cette BAL : rien n'est transféré."
        ),
    )

    def clean_texte(self) -> str:
        text = str(self.cleaned_data.get("texte") or "")
        if has_control_characters(text.replace("\r", "").replace("\n", "").replace("\t", " ")):
            raise forms.ValidationError("Le texte contient un caractère de contrôle : retirez-le.")
        if not text.strip():
            raise forms.ValidationError("Écrivez le texte de la réponse.")
        return text
