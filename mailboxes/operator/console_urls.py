"""The operator's console, mounted at /operateur/ (its sign-in pages and the break-glass admin
live next to it: accounts.operator_urls, /operateur/admin/)."""

from django.urls import path

from mailboxes.operator.views import panels, queue

app_name = "operator_console"

urlpatterns = [
    path("", queue.queue, name="queue"),
    path("file/<uuid:message_id>/", queue.message, name="message"),
    path("file/<uuid:message_id>/relancer/", queue.retry, name="retry"),
    path("file/<uuid:message_id>/abandonner/", queue.abandon, name="abandon"),
    path("reception/", panels.inbound, name="inbound"),
    path("confiance/", panels.trust, name="trust"),
    path("annuaire/", panels.directory, name="directory"),
    path("structures/", panels.structures, name="structures"),
    path("structures/<uuid:structure_id>/", panels.structure, name="structure"),
    path("bal/<uuid:bal_id>/quota/", panels.quota, name="quota"),
]
