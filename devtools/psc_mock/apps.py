from django.apps import AppConfig


class PscMockConfig(AppConfig):
    name = "devtools.psc_mock"
    label = "psc_mock"
    verbose_name = "Pro Santé Connect (maquette)"
