"""Writes of the mailboxes app (split by subdomain, STYLE.md)."""
