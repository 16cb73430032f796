"""The director's console, mounted at /console/."""

from django.urls import path

from mailboxes.console.views import activity, bals, certificates, people

app_name = "console"

S = "<uuid:structure_id>/"
B = S + "bal/<uuid:bal_id>/"

urlpatterns = [
    path("", bals.home, name="home"),
    path("annuaire/", bals.publication, name="publication"),
    path(S, bals.structure, name="structure"),
    path(S + "bal/nouvelle/<slug:kind>/", bals.bal_create, name="bal_create"),
    path(B, bals.bal, name="bal"),
    path(B + "modifier/", bals.bal_edit, name="bal_edit"),
    path(B + "droits/", bals.bal_access, name="bal_access"),
    path(B + "droits/<uuid:access_id>/retirer/", bals.bal_access_revoke, name="bal_revoke"),
    path(B + "etat/", bals.bal_status, name="bal_status"),
    path(B + "notification/", bals.bal_notice, name="bal_notice"),
    path(B + "quota/", bals.bal_quota, name="bal_quota"),
    path(B + "exporter/", bals.bal_export, name="bal_export"),
    path(B + "fermer/", bals.bal_close, name="bal_close"),
    path(B + "certificats/", certificates.certificate_add, name="certificate_add"),
    path(
        B + "certificats/<uuid:certificate_id>/retirer/",
        certificates.certificate_remove,
        name="certificate_remove",
    ),
    path(S + "taches/<uuid:job_id>/", bals.job, name="job"),
    path(S + "exports/<uuid:export_id>/", bals.export_download, name="export_download"),
    path(S + "personnes/", people.people_list, name="people"),
    path(S + "personnes/<uuid:membership_id>/role/", people.person_role, name="role"),
    path(
        S + "personnes/<uuid:membership_id>/retirer/",
        people.person_remove,
        name="person_remove",
    ),
    path(S + "cle/", people.recovery_key, name="recovery_key"),
    path(S + "documents-de-sante/", people.sector, name="sector"),
    path(S + "journal/", activity.journal, name="journal"),
    path(S + "journal.csv", activity.journal_csv, name="journal_csv"),
    path(S + "indicateurs/", activity.indicators, name="indicators"),
    path(S + "indicateurs.csv", activity.indicators_csv, name="indicators_csv"),
]
