"""The operator's console (operator staff, not a structure's director; Django's admin stays the
break-glass tool): the outbound queue, the gateway's sessions and refusals, the trust material
in force (whitelist, CRL, our certificates), the directory imports, structures and quotas."""
