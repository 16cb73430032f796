"""The operator's break-glass console (Django admin). Role changes go through the service so
that they are traced; traces are read-only."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from accounts.identifiers import validate_finess, validate_siret
from accounts.models import AuditEvent, Membership, Structure, StructureDomain, User
from accounts.services import membership_set_role


@admin.register(User)
class PortalUserAdmin(UserAdmin):
    list_display = (
        "username",
        "national_id",
        "first_name",
        "last_name",
        "profession_code",
        "is_active",
        "is_superuser",
    )
    search_fields = ("username", "national_id", "first_name", "last_name")
    readonly_fields = ("public_id", "psc_refreshed_at", "professions", "last_auth_mode")
    fieldsets = (
        *UserAdmin.fieldsets,  # type: ignore[misc]
        (
            "Pro Santé Connect",
            {
                "fields": (
                    "public_id",
                    "national_id",
                    "civility",
                    "profession_code",
                    "savoir_faire_code",
                    "professions",
                    "last_auth_mode",
                    "psc_refreshed_at",
                )
            },
        ),
    )


class StructureDomainInline(admin.TabularInline):
    model = StructureDomain
    extra = 1


class StructureForm(forms.ModelForm):
    class Meta:
        model = Structure
        fields = ("identifier_kind", "identifier", "name")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        kind, value = data.get("identifier_kind"), data.get("identifier")
        if kind and value:
            try:
                data["identifier"] = (
                    validate_siret(value)
                    if kind == Structure.IdentifierKind.SIRET
                    else validate_finess(value)
                )
            except ValidationError as exc:
                self.add_error("identifier", exc)
        return data


@admin.register(Structure)
class StructureAdmin(admin.ModelAdmin):
    form = StructureForm
    list_display = ("name", "identifier_kind", "identifier", "created_at")
    search_fields = ("name", "identifier", "domains__domain")
    inlines = [StructureDomainInline]


class MembershipForm(forms.ModelForm):
    class Meta:
        model = Membership
        fields = ("user", "structure", "role")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    form = MembershipForm
    list_display = ("user", "structure", "role", "source", "created_at")
    list_filter = ("role", "source")
    search_fields = ("user__national_id", "user__last_name", "structure__name")

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        saved = membership_set_role(
            structure=obj.structure,
            user=obj.user,
            role=obj.role,
            actor=request.user if isinstance(request.user, User) else None,
            request=request,
        )
        obj.pk = saved.pk


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = (
        "occurred_at",
        "action",
        "result",
        "actor_label",
        "target_type",
        "target_id",
        "error_code",
    )
    list_filter = ("action", "result")
    search_fields = ("actor_label", "target_id")
    date_hierarchy = "occurred_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
