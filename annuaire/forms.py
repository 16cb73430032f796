"""The annuaire search form (GET): parsed here, never trusted further."""

from __future__ import annotations

from typing import Any

from django import forms

from annuaire.search import DirectoryQuery

Choices = dict[str, list[tuple[str, str]]]


class DirectorySearchForm(forms.Form):
    type = forms.ChoiceField(
        label="Rechercher",
        choices=[("pro", "Des professionnels"), ("structure", "Des structures")],
        required=False,
        widget=forms.RadioSelect,
    )
    nom = forms.CharField(label="Nom", max_length=100, required=False)
    prenom = forms.CharField(label="Prénom", max_length=100, required=False)
    profession = forms.ChoiceField(label="Profession", required=False)
    specialite = forms.ChoiceField(label="Savoir-faire (spécialité)", required=False)
    lieu = forms.CharField(
        label="Code postal, département ou ville", max_length=100, required=False
    )
    identifiant = forms.CharField(
        label="Identifiant national (RPPS, ADELI) ou FINESS", max_length=30, required=False
    )
    structure = forms.CharField(label="Nom de la structure", max_length=200, required=False)
    page = forms.IntegerField(min_value=1, max_value=10_000, required=False)

    def __init__(
        self, *args: Any, choices: dict[str, list[tuple[str, str]]], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        profession = self.fields["profession"]
        specialty = self.fields["specialite"]
        assert isinstance(profession, forms.ChoiceField)
        assert isinstance(specialty, forms.ChoiceField)
        profession.choices = [("", "Toutes"), *choices["professions"]]
        specialty.choices = [("", "Tous"), *choices["specialties"]]

    def query(self) -> DirectoryQuery:
        data = self.cleaned_data
        return DirectoryQuery(
            kind=data.get("type") or "pro",
            last_name=data.get("nom", ""),
            first_name=data.get("prenom", ""),
            profession=data.get("profession", ""),
            specialty=data.get("specialite", ""),
            place=data.get("lieu", ""),
            identifier=data.get("identifiant", ""),
            structure=data.get("structure", ""),
        )
