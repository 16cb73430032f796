from django.urls import path

from mailboxes.views import compose, console, console_people, webmail

app_name = "mailboxes"

urlpatterns = [
    path("", webmail.index, name="index"),
    path("selecteur/", webmail.switcher, name="switcher"),
    path("ecrire/", compose.compose_to, name="compose_to"),
    path("console/annuaire/", console.publication, name="publication"),
    path("destinataires/suggestions/", compose.recipient_suggest, name="recipient_suggest"),
    path("destinataires/verifier/", compose.recipients_check, name="recipients_check"),
    path("<uuid:public_id>/", webmail.folder, name="folder"),
    path("<uuid:public_id>/ecrire/", compose.compose, name="compose"),
    path("<uuid:public_id>/delegations/", console_people.delegations, name="delegations"),
    path(
        "<uuid:public_id>/delegations/accorder/",
        console_people.delegation_grant,
        name="delegation_grant",
    ),
    path(
        "<uuid:public_id>/delegations/<uuid:access_id>/retirer/",
        console_people.delegation_revoke,
        name="delegation_revoke",
    ),
    path("<uuid:public_id>/actions/", webmail.act, name="act"),
    path("<uuid:public_id>/corbeille/vider/", webmail.empty_trash, name="empty_trash"),
    path("<uuid:public_id>/messages/<int:uid>/", webmail.message, name="message"),
    path("<uuid:public_id>/messages/<int:uid>/accuse/", webmail.receipt, name="receipt"),
    path("<uuid:public_id>/messages/<int:uid>/contenu/", webmail.message_body, name="message_body"),
    path(
        "<uuid:public_id>/messages/<int:uid>/pieces/<int:index>/",
        webmail.attachment,
        name="attachment",
    ),
]
