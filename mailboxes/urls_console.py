"""The director's console, mounted at /console/."""

from django.urls import path

from mailboxes.views import console, console_people, console_reports

app_name = "console"

S = "<uuid:structure_id>/"
B = S + "bal/<uuid:bal_id>/"

urlpatterns = [
    path("", console.home, name="home"),
    path(S, console.structure, name="structure"),
    path(S + "bal/nouvelle/<slug:kind>/", console.bal_create, name="bal_create"),
    path(B, console.bal, name="bal"),
    path(B + "modifier/", console.bal_edit, name="bal_edit"),
    path(B + "droits/", console.bal_access, name="bal_access"),
    path(B + "droits/<uuid:access_id>/retirer/", console.bal_access_revoke, name="bal_revoke"),
    path(B + "etat/", console.bal_status, name="bal_status"),
    path(B + "notification/", console.bal_notice, name="bal_notice"),
    path(B + "exporter/", console.bal_export, name="bal_export"),
    path(B + "fermer/", console.bal_close, name="bal_close"),
    path(S + "exports/<uuid:export_id>/", console.export_download, name="export_download"),
    path(S + "personnes/", console_people.people_list, name="people"),
    path(S + "personnes/<uuid:membership_id>/role/", console_people.person_role, name="role"),
    path(
        S + "personnes/<uuid:membership_id>/retirer/",
        console_people.person_remove,
        name="person_remove",
    ),
    path(S + "cle/", console_people.recovery_key, name="recovery_key"),
    path(S + "journal/", console_reports.journal, name="journal"),
    path(S + "journal.csv", console_reports.journal_csv, name="journal_csv"),
    path(S + "indicateurs/", console_reports.indicators, name="indicators"),
    path(S + "indicateurs.csv", console_reports.indicators_csv, name="indicators_csv"),
]
