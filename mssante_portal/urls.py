from django.conf import settings
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("", include("accounts.urls")),
    path("comptes/", include("accounts.psc.urls")),
    path("bal/", include("mailboxes.urls")),
    path("annuaire/", include("annuaire.urls")),
    path("console/", include("mailboxes.console.urls")),
    path("operateur/admin/", admin.site.urls),
    path("operateur/", include("accounts.operator_urls")),
    path("operateur/", include("mailboxes.operator.console_urls")),
    path("sante/", include("mailboxes.operator.urls")),
]

if settings.PSC_MOCK_ENABLED:
    urlpatterns.append(path("_dev/psc/", include("devtools.psc_mock.urls")))

handler404 = "accounts.views.not_found"
