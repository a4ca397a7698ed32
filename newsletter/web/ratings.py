"""Rating papers: a digest's "more / less like this" page, the manage page's list, my data."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from newsletter import storage, tokens
from newsletter.models import DISLIKE, LIKE, Delivery, Rating, Subscriber
from newsletter.render import DigestItem, paper_view
from newsletter.tokens import RateLink, TokenError
from newsletter.web import csrf
from newsletter.web.archive import gone_digest, row_items
from newsletter.web.context import FormDep, Web, WebDep, get_web, require_csrf
from newsletter.web.links import LinkError, forged, revoked, subscriber_for

router = APIRouter()

FIELD_PREFIX = "rating:"
CHOICES = {"more": LIKE, "less": DISLIKE, "none": 0}
CHOICE_OF = {LIKE: "more", DISLIKE: "less", 0: "none"}
# A digest holds up to 50 papers (Settings.digest_size): one field each, and the CSRF token.
MAX_RATING_FIELDS = 64
ORIGINS = {"email": "from your digest", "web": "on the website", "import": "imported"}


def expired_rating() -> LinkError:
    return LinkError(
        410,
        "This rating link has expired",
        f"Papers can be rated from a digest for {tokens.RATE_LINK_DAYS} days. Nothing was "
        "changed. Use the links in a more recent digest.",
    )


# The digest's rating page -----------------------------------------------------------------------


@dataclass(frozen=True)
class RatingTarget:
    """A rating link's subscriber and digest, checked; `items` are the digest's papers."""

    link: RateLink
    subscriber: Subscriber
    row: Delivery
    items: list[DigestItem]


def rating_target(session: Session, web: Web, token: str) -> RatingTarget:
    """The subscriber and digest a rating link names, or LinkError; nothing is changed."""
    try:
        link = tokens.read_rate_token(web.settings, token, today=web.clock().date())
    except TokenError as exc:
        raise (expired_rating() if exc.expired else forged()) from None
    subscriber = storage.subscriber_by_id(session, link.subscriber_id)
    # As every link: it dies when the subscriber unsubscribes, comes back or is deleted.
    if subscriber is None or not hmac.compare_digest(subscriber.link_key, link.link_key):
        raise revoked()
    row = storage.delivery_for_edition(session, subscriber.id, link.edition)
    if row is None:
        raise gone_digest()
    return RatingTarget(link, subscriber, row, row_items(session, row))


@router.get("/rate/{token}", response_class=HTMLResponse)
def rating_page(request: Request, token: str, web: WebDep) -> HTMLResponse:
    """The digest's papers with the reader's ratings, to change and save in one go."""
    return _show(request, token, web, choice=None)


@router.get("/rate/{token}/{choice}", response_class=HTMLResponse)
def rating_page_with_choice(request: Request, token: str, choice: str, web: WebDep) -> Response:
    """The same page with the link's rating pre-selected: a GET saves nothing (mail scanners
    open every link), the page's one button does."""
    if choice not in ("more", "less"):
        raise forged()
    return _show(request, token, web, choice=choice)


def _show(request: Request, token: str, web: WebDep, *, choice: str | None) -> HTMLResponse:
    with web.db.session() as session:
        target = rating_target(session, web, token)
        stored = _stored(session, target)
    selected = {paper: CHOICE_OF[value] for paper, value in stored.items()}
    if choice is not None:
        selected[target.link.paper_id] = choice
    notice = "Your ratings are saved." if request.query_params.get("done") == "saved" else None
    return _page(request, web, token, target, selected, stored, notice=notice)


async def read_rating_form(request: Request) -> FormData:
    """FastAPI dependency: the rating form, CSRF-checked; it has more fields than the other
    forms (one per paper), so it is read here before any check reads it with their limit."""
    form = await request.form(max_files=0, max_fields=MAX_RATING_FIELDS)
    csrf.check(request, get_web(request).settings, form.get(csrf.FIELD))
    return form


RatingFormDep = Annotated[FormData, Depends(read_rating_form)]


@router.post("/rate/{token}", response_class=HTMLResponse)
def save_ratings(request: Request, token: str, web: WebDep, form: RatingFormDep) -> Response:
    """Save the page's ratings: set, changed or cleared ("none"); a bad form changes nothing."""
    with web.db.session() as session:
        target = rating_target(session, web, token)
        stored = _stored(session, target)
        chosen, problem = parse_ratings(form, [item.paper.id for item in target.items])
        if problem is not None:
            selected = {paper: CHOICE_OF[value] for paper, value in stored.items()}
            return _page(request, web, token, target, selected, stored, error=problem, status=422)
        apply_ratings(session, target, stored, chosen, now=web.clock())
    return RedirectResponse(web.pages.href(f"/rate/{token}?done=saved"), status_code=303)


def parse_ratings(form: FormData, papers: Iterable[str]) -> tuple[dict[str, int], str | None]:
    """{paper id: 1, -1 or 0 (clear)} from the form, or the problem that makes it unusable."""
    allowed = set(papers)
    chosen: dict[str, int] = {}
    for name, value in form.multi_items():
        if name == csrf.FIELD:
            continue
        paper = name.removeprefix(FIELD_PREFIX)
        if name == paper or paper not in allowed:
            return {}, "The form names a paper that is not in this digest. Nothing was saved."
        if paper in chosen or not isinstance(value, str) or value not in CHOICES:
            return {}, "The form holds a rating this page does not offer. Nothing was saved."
        chosen[paper] = CHOICES[value]
    return chosen, None


def apply_ratings(
    session: Session,
    target: RatingTarget,
    stored: Mapping[str, int],
    chosen: Mapping[str, int],
    *,
    now: datetime,
) -> None:
    """Store what changed: an unchanged rating keeps the time it was given."""
    for paper, value in chosen.items():
        if stored.get(paper, 0) == value:
            continue
        if value == 0:
            storage.clear_rating(session, target.subscriber.id, paper)
        else:
            storage.set_rating(
                session,
                target.subscriber.id,
                paper,
                value,
                origin="email",
                now=now,
                edition=target.link.edition,
            )


def _stored(session: Session, target: RatingTarget) -> dict[str, int]:
    """The reader's ratings of this digest's papers."""
    papers = {item.paper.id for item in target.items}
    ratings = storage.subscriber_ratings(session, target.subscriber.id)
    return {r.paper_id: r.value for r in ratings if r.paper_id in papers}


def _page(
    request: Request,
    web: Web,
    token: str,
    target: RatingTarget,
    selected: Mapping[str, str],
    stored: Mapping[str, int],
    *,
    notice: str | None = None,
    error: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    clicked = target.link.paper_id
    papers = [
        {
            "id": item.paper.id,
            "view": paper_view(item.paper),
            "choice": selected.get(item.paper.id, "none"),
            "unsaved": selected.get(item.paper.id, "none")
            != CHOICE_OF[stored.get(item.paper.id, 0)],
            "field": FIELD_PREFIX + item.paper.id,
            "number": number,
        }
        for number, item in enumerate(target.items, 1)
    ]
    edition = target.row.edition
    context = {
        "first": [p for p in papers if p["id"] == clicked],
        "rest": [p for p in papers if p["id"] != clicked],
        "edition_long": f"{edition:%A}, {edition.day} {edition:%B %Y}",
        "email": target.subscriber.email,
        "action": web.pages.href(f"/rate/{token}"),
        "manage_url": web.pages.href(f"/manage/{_manage_token(web, target.subscriber)}"),
        "notice": notice,
        "error": error,
    }
    return web.pages.render(request, "rate.html", context, status=status)


def _manage_token(web: Web, subscriber: Subscriber) -> str:
    return tokens.make_token(web.settings, "manage", subscriber.id, subscriber.link_key)


# The manage page's list of rated papers ----------------------------------------------------------


@dataclass(frozen=True)
class RatedPaper:
    """One line of the manage page's list: the paper, the rating, when and from where."""

    paper_id: str
    title: str
    url: str
    value: int
    rated_on: str
    origin: str


def _when(moment: datetime | date) -> str:
    return f"{moment.day} {moment:%B %Y}"


def rated_papers(session: Session, subscriber: Subscriber) -> list[RatedPaper]:
    """The subscriber's ratings, the latest first, with the titles of the papers we have."""
    ratings = storage.subscriber_ratings(session, subscriber.id)
    papers = storage.papers_by_id(session, [r.paper_id for r in ratings])
    shown = []
    for rating in ratings:
        paper = papers.get(rating.paper_id)
        # A liked paper still being fetched is listed by its id until it is here.
        view = paper_view(paper) if paper is not None else None
        origin = ORIGINS.get(rating.origin, rating.origin)
        if rating.origin == "email" and rating.edition is not None:
            origin = f"from your digest of {_when(rating.edition)}"
        shown.append(
            RatedPaper(
                paper_id=rating.paper_id,
                title=view.title if view else f"arXiv:{rating.paper_id}",
                url=view.url if view else f"https://arxiv.org/abs/{rating.paper_id}",
                value=rating.value,
                rated_on=_when(rating.rated_at),
                origin=origin,
            )
        )
    return shown


def ratings_context(
    web: Web, session: Session, subscriber: Subscriber, token: str
) -> dict[str, Any]:
    """What the manage page's ratings block shows: the rated papers and the forms' addresses."""
    return {
        "rated_papers": rated_papers(session, subscriber),
        "ratings_action": web.pages.href(f"/manage/{token}/ratings"),
        "data_action": web.pages.href(f"/manage/{token}/data"),
    }


def _done(web: Web, token: str, what: str) -> RedirectResponse:
    return RedirectResponse(
        web.pages.href(f"/manage/{token}?done={what}#ratings-heading"), status_code=303
    )


@router.post(
    "/manage/{token}/ratings/clear",
    response_class=RedirectResponse,
    dependencies=[Depends(require_csrf)],
)
def clear_one(token: str, web: WebDep, form: FormDep) -> RedirectResponse:
    """Forget one rating (the paper named by the form); an unknown paper changes nothing."""
    paper = form.get("paper")
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        if isinstance(paper, str) and paper:
            storage.clear_rating(session, subscriber.id, paper)
    return _done(web, token, "rating_cleared")


@router.post(
    "/manage/{token}/ratings/clear-all",
    response_class=RedirectResponse,
    dependencies=[Depends(require_csrf)],
)
def clear_all(token: str, web: WebDep) -> RedirectResponse:
    """Forget every rating of the subscriber."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        storage.clear_ratings(session, subscriber.id)
    return _done(web, token, "ratings_cleared")


# "Download my data" ------------------------------------------------------------------------------


@router.post("/manage/{token}/data", dependencies=[Depends(require_csrf)])
def download_data(token: str, web: WebDep) -> Response:
    """The subscriber's profile, ratings and delivery history as a JSON file (changes nothing)."""
    with web.db.session() as session:
        subscriber = subscriber_for(session, web.settings, "manage", token)
        document = subscriber_data(session, subscriber, now=web.clock())
    body = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    name = f"paper-digest-data-{web.clock():%Y-%m-%d}.json"
    headers = {"Content-Disposition": f'attachment; filename="{name}"'}
    return Response(body, media_type="application/json; charset=utf-8", headers=headers)


def _stamp(moment: datetime | date | None) -> str | None:
    return None if moment is None else moment.isoformat()


def subscriber_data(session: Session, subscriber: Subscriber, *, now: datetime) -> dict[str, Any]:
    """Everything kept about the subscriber that is theirs to see (no link keys: those sign
    their links and would let anyone holding the file forge them)."""
    ratings = storage.subscriber_ratings(session, subscriber.id)
    rows = storage.subscriber_deliveries(session, subscriber.id, limit=100_000)
    ids = {r.paper_id for r in ratings} | {i for row in rows for i in _row_paper_ids(row)}
    titles = {pid: paper_view(p).title for pid, p in storage.papers_by_id(session, ids).items()}
    return {
        "exported_at": _stamp(now),
        "profile": _profile(subscriber),
        "ratings": [_rating(rating, titles) for rating in ratings],
        "deliveries": [_delivery(row, titles) for row in rows],
    }


def _profile(subscriber: Subscriber) -> dict[str, Any]:
    return {
        "email": subscriber.email,
        "state": subscriber.state,
        "keywords": subscriber.keywords,
        "frequency": subscriber.frequency,
        "send_hour": subscriber.send_hour,
        "send_weekday": subscriber.send_weekday,
        "timezone": subscriber.timezone,
        "digest_size": subscriber.digest_size,
        "show_trending": subscriber.show_trending,
        "subscribed_at": _stamp(subscriber.created_at),
        "confirmed_at": _stamp(subscriber.confirmed_at),
        "unsubscribed_at": _stamp(subscriber.unsubscribed_at),
    }


def _rating(rating: Rating, titles: Mapping[str, str]) -> dict[str, Any]:
    return {
        "paper_id": rating.paper_id,
        "title": titles.get(rating.paper_id),
        "rating": CHOICE_OF[rating.value],
        "origin": rating.origin,
        "edition": _stamp(rating.edition),
        "rated_at": _stamp(rating.rated_at),
    }


def _row_paper_ids(row: Delivery) -> list[str]:
    try:
        return [item.paper_id for item in storage.planned_items(row.items)]
    except storage.MalformedItems:
        return list(row.paper_ids or [])


def _delivery(row: Delivery, titles: Mapping[str, str]) -> dict[str, Any]:
    return {
        "edition": _stamp(row.edition),
        "state": row.state,
        "sent_at": _stamp(row.sent_at),
        "papers": [{"id": pid, "title": titles.get(pid)} for pid in _row_paper_ids(row)],
    }
