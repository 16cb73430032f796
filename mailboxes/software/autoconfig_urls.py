"""Thunderbird's autoconfig path, mounted under /.well-known/autoconfig/ and at the root (the
``autoconfig.<domain>`` host form)."""

from django.urls import path

from mailboxes.software import views

urlpatterns = [path("mail/config-v1.1.xml", views.autoconfig)]
