"""The webmail, mounted at /bal/ (and the holder's own delegations, a console service)."""

from django.urls import path

from mailboxes.console.views import bals, people
from mailboxes.software import views as software
from mailboxes.webmail.views import absence, compose, documents, organising, printing, reading

app_name = "mailboxes"

urlpatterns = [
    path("", reading.index, name="index"),
    path("selecteur/", reading.switcher, name="switcher"),
    path("ecrire/", compose.compose_to, name="compose_to"),
    # The console's annuaire page lived here: old links and bookmarks follow it.
    path("console/annuaire/", bals.publication_moved, name="publication_moved"),
    path("destinataires/suggestions/", compose.recipient_suggest, name="recipient_suggest"),
    path("destinataires/verifier/", compose.recipients_check, name="recipients_check"),
    path("<uuid:public_id>/", reading.folder, name="folder"),
    path("<uuid:public_id>/nouveaux/", reading.arrivals, name="arrivals"),
    path("<uuid:public_id>/ecrire/", compose.compose, name="compose"),
    path("<uuid:public_id>/signature/", compose.signature, name="signature"),
    path("<uuid:public_id>/absence/", absence.absence, name="absence"),
    path("<uuid:public_id>/logiciel/", software.connect, name="software_connect"),
    path("<uuid:public_id>/delegations/", people.delegations, name="delegations"),
    path(
        "<uuid:public_id>/delegations/accorder/",
        people.delegation_grant,
        name="delegation_grant",
    ),
    path(
        "<uuid:public_id>/delegations/<uuid:access_id>/retirer/",
        people.delegation_revoke,
        name="delegation_revoke",
    ),
    path("<uuid:public_id>/actions/", reading.act, name="act"),
    path("<uuid:public_id>/corbeille/vider/", organising.empty_trash, name="empty_trash"),
    path("<uuid:public_id>/corbeille/annuler/", organising.restore, name="restore"),
    path("<uuid:public_id>/dossiers/", organising.folders_manage, name="folders_manage"),
    path("<uuid:public_id>/messages/<int:uid>/", reading.message, name="message"),
    path("<uuid:public_id>/messages/<int:uid>/accuse/", reading.receipt, name="receipt"),
    path("<uuid:public_id>/messages/<int:uid>/prise-en-charge/", reading.handle, name="handle"),
    path("<uuid:public_id>/messages/<int:uid>/contenu/", reading.message_body, name="message_body"),
    path("<uuid:public_id>/messages/<int:uid>/imprimer/", printing.message_print, name="print"),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/",
        printing.attachment_preview,
        name="attachment_preview",
    ),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/apercu/fichier/",
        printing.attachment_file,
        name="attachment_file",
    ),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/",
        reading.attachment,
        name="attachment",
    ),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/",
        documents.document,
        name="document",
    ),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/cda/",
        documents.document_cda,
        name="document_cda",
    ),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/documents/<int:doc>/pdf/",
        documents.document_pdf,
        name="document_pdf",
    ),
]
