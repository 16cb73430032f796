"""The operator's endpoints, mounted at /sante/ (health for the orchestrator, metrics for
Prometheus)."""

from django.urls import path

from mailboxes.operator import health, metrics

app_name = "operator"

urlpatterns = [
    path("", health.alive, name="alive"),
    path("pret/", health.ready, name="ready"),
    path("metriques", metrics.metrics, name="metrics"),
]
