"""The operator's endpoints, mounted at /sante/ (health for the orchestrator)."""

from django.urls import path

from mailboxes.operator import health

app_name = "operator"

urlpatterns = [
    path("", health.alive, name="alive"),
    path("pret/", health.ready, name="ready"),
]
