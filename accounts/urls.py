from django.urls import path

from accounts import views

app_name = "accounts"

urlpatterns = [
    path("", views.home, name="home"),
    path("connexion/", views.login_page, name="login"),
    path("deconnexion/", views.logout, name="logout"),
    path("deconnecte/", views.logged_out, name="logged_out"),
]
