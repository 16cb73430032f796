from django.urls import path

from devtools.psc_mock import views

app_name = "psc_mock"

REALM = "auth/realms/esante-wallet"
OIDC = f"{REALM}/protocol/openid-connect"

# Path shapes of PSC (§B1): discovery at `.well-known/wallet-openid-configuration`, authorize on
# the `wallet.` host (here a `wallet/` prefix), the rest under the Keycloak realm.
urlpatterns = [
    path(REALM, views.issuer, name="issuer"),
    path(f"{REALM}/.well-known/wallet-openid-configuration", views.discovery, name="discovery"),
    path("wallet/auth", views.authorize, name="authorize"),
    path(f"{OIDC}/token", views.token, name="token"),
    path(f"{OIDC}/token/introspect", views.introspect, name="introspect"),
    path(f"{OIDC}/revoke", views.revoke, name="revoke"),
    path(f"{OIDC}/userinfo", views.userinfo, name="userinfo"),
    path(f"{OIDC}/certs", views.jwks, name="jwks"),
    path(f"{OIDC}/logout", views.logout, name="logout"),
]
