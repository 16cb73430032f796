"""Health documents (mssante-spec §3.2-§3.5): IHE XDM archives and the CDA documents inside
them, read for the webmail's « Documents de santé » panel and built for sending. Pure parsing
and building over bytes: no store, no transport."""
