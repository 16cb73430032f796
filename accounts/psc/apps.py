from django.apps import AppConfig


class PscConfig(AppConfig):
    name = "accounts.psc"
    label = "psc"
    verbose_name = "Pro Santé Connect"
