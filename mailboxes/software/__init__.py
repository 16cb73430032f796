"""Software and mail clients (API LPS, mssante-spec §2.2): IMAP and submission authenticated
with Pro Santé Connect tokens (SASL XOAUTH2 / OAUTHBEARER), applicative BALs by certificate,
client auto-configuration. Dovecot asks; the rights are those of ``mailboxes.access``."""
