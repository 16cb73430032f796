"""The break-glass operator's sign-in and second factor, mounted at /operateur/ next to the
admin: allauth's password sign-in (failed attempts limited), sign-out and re-authentication,
and allauth.mfa's pages (TOTP, WebAuthn keys, recovery codes). No sign-up, no password reset:
the account is made with ``createsuperuser``."""

from allauth.account import views as account_views
from django.urls import include, path

urlpatterns = [
    path("connexion/", account_views.login, name="account_login"),
    path("deconnexion/", account_views.logout, name="account_logout"),
    path("reauthentification/", account_views.reauthenticate, name="account_reauthenticate"),
    path("double-authentification/", include("allauth.mfa.urls")),
]
