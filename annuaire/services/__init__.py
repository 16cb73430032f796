"""Writes of the annuaire app: the whitelist sync and the directory import."""

from annuaire.services.extraction_import import directory_import, directory_import_url
from annuaire.services.whitelist_sync import whitelist_staleness_check, whitelist_sync

__all__ = [
    "directory_import",
    "directory_import_url",
    "whitelist_staleness_check",
    "whitelist_sync",
]
