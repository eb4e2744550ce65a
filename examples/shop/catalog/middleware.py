"""What a CMS's redirects app does: acts on a 404 *response*, so it only works if the 404 reaches it."""

from django.http import HttpResponsePermanentRedirect

REDIRECTS = {"/old-offers/": "/"}


class RedirectRetired:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.status_code == 404 and request.path in REDIRECTS:
            return HttpResponsePermanentRedirect(REDIRECTS[request.path])
        return response
