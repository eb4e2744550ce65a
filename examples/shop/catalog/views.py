from django.core import signing
from django.db.models import F
from django.http import Http404, HttpResponse, JsonResponse

from catalog.models import Product


def product_list(request):
    # N+1 on purpose, as real list views often are: one query for the page, one per product's category
    items = [{"id": p.id, "name": p.name, "category": p.category.name} for p in Product.objects.order_by("id")[:10]]
    # the next page's cursor, signed (so it needs SECRET_KEY, as sessions and CSRF do in most projects)
    cursor = signing.dumps({"after": items[-1]["id"]}) if items else None
    return JsonResponse({"products": items, "next": cursor})


def product_detail(request, pk):
    p = Product.objects.select_related("category").filter(pk=pk).first()
    if p is None:
        raise Http404("no such product")
    return JsonResponse({"id": p.id, "name": p.name, "category": p.category.name, "price_cents": p.price_cents})


def product_hit(request, pk):
    # a write: counts a view (a GET with a side effect keeps the load a list of paths)
    updated = Product.objects.filter(pk=pk).update(views=F("views") + 1)
    if not updated:
        raise Http404("no such product")
    return JsonResponse({"id": pk, "counted": True})


def up(request):
    return HttpResponse("ok")


def retired(request):
    # a page that is gone: its old URL is redirected by catalog.middleware.RedirectRetired, on the 404
    raise Http404("this page was retired")


def broken(request):
    # a bug that is not the database's: the project's own 500, whatever runs it
    raise RuntimeError("the shop's own bug")
