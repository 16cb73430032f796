"""Parsing of webmail requests: query strings and action posts, with French errors."""

from __future__ import annotations

from typing import Any

from django import forms

from mailboxes.store.imap import Criteria

DATE_FORMATS = ["%Y-%m-%d", "%d/%m/%Y"]
# French URL values -> store orders (mailboxes.store.imap.SORT_ORDERS, "arrival" by default)
ORDERS = {
    "reception": "arrival",
    "date": "date",
    "date-croissante": "date-asc",
    "expediteur": "sender",
    "objet": "subject",
    "taille": "size",
}


class FolderQuery(forms.Form):
    dossier = forms.CharField(max_length=200, required=False)
    page = forms.IntegerField(min_value=1, max_value=100_000, required=False)
    tri = forms.ChoiceField(choices=[(k, k) for k in ORDERS], required=False)
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

    def criteria(self) -> Criteria:
        if not self.is_valid():
            return Criteria()
        d = self.cleaned_data
        return Criteria(
            sender=d["de"], subject=d["objet"], body=d["texte"], since=d["du"], before=d["au"]
        )


class MessageQuery(forms.Form):
    dossier = forms.CharField(max_length=200)
    images = forms.BooleanField(required=False)


ACTIONS = [
    ("lu", "Marquer comme lu"),
    ("non-lu", "Marquer comme non lu"),
    ("suivi", "Marquer pour suivi"),
    ("non-suivi", "Retirer le suivi"),
    ("deplacer", "Déplacer"),
    ("supprimer", "Supprimer"),
]


class MessagesAction(forms.Form):
    dossier = forms.CharField(max_length=200)
    action = forms.ChoiceField(
        choices=ACTIONS, error_messages={"invalid_choice": "Action inconnue."}
    )
    cible = forms.CharField(max_length=200, required=False)
    uids = forms.CharField(required=False, widget=forms.MultipleHiddenInput)

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
