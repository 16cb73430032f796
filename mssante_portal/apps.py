from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "mssante_portal"
    verbose_name = "Portail MSSanté"

    def ready(self) -> None:
        from mssante_portal import checks  # noqa: F401  (registers the system checks)
