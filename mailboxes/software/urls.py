"""Software access (API LPS), mounted at /logiciels/."""

from django.urls import path

from mailboxes.software import views

app_name = "software"

urlpatterns = [
    path("dovecot/auth", views.dovecot_auth, name="dovecot_auth"),
]
