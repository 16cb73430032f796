"""Operator console (Django admin): the directory imports and their diffs, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from annuaire.models import DirectoryChange, DirectoryImport


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(DirectoryImport)
class DirectoryImportAdmin(_ReadOnly):
    list_display = (
        "started_at",
        "file_stamp",
        "result",
        "rows_read",
        "added",
        "updated",
        "removed",
        "rejected",
        "duplicates",
        "duration_ms",
    )
    list_filter = ("result",)
    readonly_fields = [f.name for f in DirectoryImport._meta.fields]


@admin.register(DirectoryChange)
class DirectoryChangeAdmin(_ReadOnly):
    list_display = ("address", "kind", "run")
    list_filter = ("kind", "run")
    search_fields = ("address",)
    readonly_fields = ("run", "address", "kind", "fields")
