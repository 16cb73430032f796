"""django.contrib.admin's app config with the portal's admin site (accounts.admin_site): kept
apart because INSTALLED_APPS imports it before any model can be."""

from django.contrib.admin.apps import AdminConfig


class PortalAdminConfig(AdminConfig):
    default_site = "accounts.admin_site.PortalAdminSite"
