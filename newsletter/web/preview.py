"""The live preview: the latest papers ranked for typed keywords, as a page and a fragment."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.requests import Request

from newsletter.web.context import Web, WebDep, client_ip, limit
from newsletter.web.forms import MAX_FIELD_CHARS
from newsletter.web.papers import Preview

router = APIRouter()

PREVIEW_SIZE = 10
PREVIEWS_PER_MINUTE = 120  # typing with a debounce sends one or two a second at most


def _preview(request: Request, web: Web) -> Preview:
    limit(
        web,
        f"preview:ip:{client_ip(request)}",
        PREVIEWS_PER_MINUTE,
        60,
        "Too many previews at once.",
    )
    keywords = request.query_params.get("keywords", "")[:MAX_FIELD_CHARS]
    return web.papers.preview(keywords, now=web.clock(), top_k=PREVIEW_SIZE)


@router.get("/preview", response_class=HTMLResponse)
def preview_page(request: Request, web: WebDep) -> HTMLResponse:
    """A GET form and its results: works without JavaScript, which only makes it live."""
    preview = _preview(request, web)
    return web.pages.render(request, "preview.html", {"preview": preview})


@router.get("/preview/results", response_class=HTMLResponse)
def preview_results(request: Request, web: WebDep) -> HTMLResponse:
    """Only the results, as an HTML fragment, for the page script to put in place."""
    preview = _preview(request, web)
    status = 422 if preview.error else 200
    return web.pages.render(request, "_results.html", {"preview": preview}, status=status)
