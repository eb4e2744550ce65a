"""Turns an exception into a JSON 503 that names its error class, so the client can record it."""

import logging

from django.http import JsonResponse

from connbench.contract import ERROR_HEADER
from connbench.errorclass import classify_exception

log = logging.getLogger("django.request")


class ErrorClassMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        error_class = classify_exception(exception) or "http_5xx"
        log.error("%s %s: %s: %s", request.method, request.path, error_class, exception)
        resp = JsonResponse(
            {"error_class": error_class, "error": f"{type(exception).__name__}: {exception}"[:500]},
            status=503,
        )
        resp[ERROR_HEADER] = error_class
        return resp
