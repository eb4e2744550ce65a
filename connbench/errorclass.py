"""Interim error classification (replaced by the full version)."""
HEADER = "X-Connbench-Error"


def classify_exception(exc):
    return "http_5xx"


def classify_response(status, header_class, exception_text):
    if header_class:
        return header_class
    if not status:
        return "client_error"
    return "http_5xx" if status >= 500 else "client_error"
