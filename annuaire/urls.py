from django.urls import path

from annuaire import views

app_name = "annuaire"

urlpatterns = [
    path("", views.search, name="search"),
    path("suggestions/", views.suggest, name="suggest"),
]
