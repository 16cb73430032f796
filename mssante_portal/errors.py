"""The one error base class of the portal and the middleware that shows it to people.

Domain errors subclass ``PortalError``; a view lets them propagate and the middleware renders a
French page (or, for htmx, a toast fragment) with the right status. The gateway maps
``permanent`` to 5xx versus 4xx SMTP replies, the relay to bounce versus retry.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


class PortalError(Exception):
    user_message: str = "Une erreur est survenue."
    code: str = "error"
    http_status: int = 400
    permanent: bool = True

    def __init__(
        self,
        user_message: str | None = None,
        *,
        code: str | None = None,
        http_status: int | None = None,
        permanent: bool | None = None,
    ) -> None:
        if user_message is not None:
            self.user_message = user_message
        if code is not None:
            self.code = code
        if http_status is not None:
            self.http_status = http_status
        if permanent is not None:
            self.permanent = permanent
        super().__init__(self.user_message)


class PortalErrorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, PortalError):
            return None
        if getattr(request, "htmx", False):
            # htmx: the message goes to the toast area, whatever the request targeted.
            response = render(
                request, "errors/toast.html", {"error": exception}, status=exception.http_status
            )
            response["HX-Retarget"] = "#toasts"
            response["HX-Reswap"] = "innerHTML"
            return response
        return render(
            request, "errors/portal_error.html", {"error": exception}, status=exception.http_status
        )
