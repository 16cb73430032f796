from django.urls import path

from accounts.psc import views

# allauth reverses these names; the paths are ours (French).
urlpatterns = [
    path("psc/connexion/", views.login, name="prosanteconnect_login"),
    path("psc/retour/", views.callback, name="prosanteconnect_callback"),
    path("psc/inscription/", views.signup_refused, name="socialaccount_signup"),
    path("psc/compte-inactif/", views.inactive, name="account_inactive"),
]
