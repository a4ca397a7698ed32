"""Rating papers from the digest: the links, the page that saves, bad links, the manage list."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from newsletter import pipeline, storage, subscriptions, tokens
from newsletter.web.ratings import FIELD_PREFIX

RATE_LINK = re.compile(r"(More|Less) like this: (\S+)")
RATE_HREF = re.compile(r'href="(https?://[^"]+/rate/[^"/]+)/(more|less)"')
CHECKED = re.compile(r'name="rating:([^"]+)" value="(more|none|less)" checked')


@pytest.fixture
def sent(w, web_papers, outbox):
    """A subscriber sent one digest (to the outbox): (id, mail, the digest's paper ids)."""
    subscriber_id = w.add("reader@example.org", keywords="diffusion, agents, reasoning")
    assert pipeline.plan(w.db, w.settings, edition=storage.utcnow().date()).planned == 1
    assert pipeline.deliver(w.db, w.settings).sent == 1
    (mail,) = outbox()
    with w.db.session() as session:
        (row,) = storage.sent_deliveries(session, subscriber_id)
        papers = [item.paper_id for item in storage.planned_items(row.items)]
    assert len(papers) >= 3
    return subscriber_id, mail, papers


def rate_paths(mail) -> dict[str, list[str]]:
    """ "more" / "less" -> the paths of the text part's rating links, in card order."""
    found: dict[str, list[str]] = {"more": [], "less": []}
    for kind, url in RATE_LINK.findall(mail.get_body(("plain",)).get_content()):
        found[kind.lower()].append(urlsplit(url).path)
    return found


def ratings(w, subscriber_id) -> dict[str, tuple[int, str, object]]:
    with w.db.session() as session:
        return {
            r.paper_id: (r.value, r.origin, r.edition)
            for r in storage.subscriber_ratings(session, subscriber_id)
        }


def checked(html: str) -> dict[str, str]:
    return dict(CHECKED.findall(html))


def test_every_card_links_more_and_less_like_this_for_its_paper(w, sent):
    subscriber_id, mail, papers = sent
    links = rate_paths(mail)
    key = w.get(subscriber_id).link_key
    edition = storage.utcnow().date()
    for kind in ("more", "less"):
        assert len(links[kind]) == len(papers)
        for path, paper in zip(links[kind], papers, strict=True):
            assert path.endswith(f"/{kind}")
            token = path.removeprefix("/rate/").removesuffix(f"/{kind}")
            link = tokens.read_rate_token(w.settings, token, today=edition)
            assert (link.subscriber_id, link.link_key, link.edition, link.paper_id) == (
                subscriber_id,
                key,
                edition,
                paper,
            )
    # The HTML part links the same pages, a pair under each card.
    html = mail.get_body(("html",)).get_content()
    hrefs = RATE_HREF.findall(html)
    assert [urlsplit(url).path + "/" + kind for url, kind in hrefs] == [
        path for pair in zip(links["more"], links["less"], strict=True) for path in pair
    ]
    assert html.count(">More like this</a>") == html.count(">Less like this</a>") == len(papers)


def test_opening_a_rating_link_changes_nothing_and_preselects_its_rating(w, sent):
    subscriber_id, mail, papers = sent
    clicked = papers[1]
    page = w.client.get(rate_paths(mail)["less"][1])
    assert page.status_code == 200
    assert ratings(w, subscriber_id) == {}  # a mail scanner opening it saved nothing
    assert checked(page.text) == {clicked: "less", **{p: "none" for p in papers if p != clicked}}
    # The clicked paper comes first, marked unsaved; the rest of the digest follows.
    assert page.text.index(f'name="{FIELD_PREFIX}{clicked}"') < page.text.index(
        f'name="{FIELD_PREFIX}{papers[0]}"'
    )
    assert page.text.count("Not saved yet.") == 1
    assert page.text.count('type="submit"') == 1  # one button saves it all
    assert "noindex" in page.text


def test_the_page_saves_the_clicked_rating_and_the_rest_in_one_go(w, sent):
    subscriber_id, mail, papers = sent
    path = rate_paths(mail)["less"][0]
    fields = {f"{FIELD_PREFIX}{papers[0]}": "less", f"{FIELD_PREFIX}{papers[2]}": "more"}
    saved = w.post_form(path, path.removesuffix("/less"), **fields)
    assert saved.status_code == 303
    edition = storage.utcnow().date()
    assert ratings(w, subscriber_id) == {
        papers[0]: (-1, "email", edition),
        papers[2]: (1, "email", edition),
    }
    page = w.client.get(saved.headers["location"])
    assert "Your ratings are saved." in page.text
    assert checked(page.text)[papers[0]] == "less" and checked(page.text)[papers[2]] == "more"
    assert "Not saved yet." not in page.text


def test_ratings_can_be_changed_and_cleared_and_unchanged_ones_keep_their_time(w, sent):
    subscriber_id, mail, papers = sent
    page = rate_paths(mail)["more"][0].removesuffix("/more")
    first = {
        f"{FIELD_PREFIX}{p}": v for p, v in zip(papers, ("more", "less", "more"), strict=False)
    }
    assert w.post_form(page, **first).status_code == 303
    with w.db.session() as session:
        before = {
            r.paper_id: r.rated_at for r in storage.subscriber_ratings(session, subscriber_id)
        }
    w.travel(timedelta(hours=1))
    changed = {**first, f"{FIELD_PREFIX}{papers[0]}": "less", f"{FIELD_PREFIX}{papers[1]}": "none"}
    assert w.post_form(page, **changed).status_code == 303
    assert {p: v for p, (v, _, _) in ratings(w, subscriber_id).items()} == {
        papers[0]: -1,
        papers[2]: 1,
    }
    with w.db.session() as session:
        after = {r.paper_id: r.rated_at for r in storage.subscriber_ratings(session, subscriber_id)}
    assert after[papers[2]] == before[papers[2]]  # sent again unchanged: not rated anew
    assert after[papers[0]] > before[papers[0]]


@pytest.mark.parametrize(
    "fields",
    [
        {"rating:0000.00000": "more"},  # a paper of no digest of theirs
        {"paper": "more"},  # not a rating field
        {"<first>": "up"},  # a value the page does not offer
    ],
)
def test_a_bad_form_shows_the_page_with_the_problem_and_saves_nothing(w, sent, fields):
    subscriber_id, mail, papers = sent
    page = rate_paths(mail)["more"][0].removesuffix("/more")
    fields = {name.replace("<first>", FIELD_PREFIX + papers[0]): v for name, v in fields.items()}
    # A valid rating in the same form is not saved either: a form is saved whole or not at all.
    answer = w.post_form(page, **{FIELD_PREFIX + papers[1]: "less"}, **fields)
    assert answer.status_code == 422
    assert "Nothing was saved." in answer.text
    assert ratings(w, subscriber_id) == {}


def test_a_post_without_the_csrf_token_or_from_another_site_changes_nothing(w, sent):
    subscriber_id, mail, papers = sent
    page = rate_paths(mail)["less"][0].removesuffix("/less")
    field = {FIELD_PREFIX + papers[0]: "less"}
    assert w.client.post(page, data=field).status_code == 403
    token = w.csrf_token(w.client.get(page).text)
    foreign = {"origin": "https://evil.example"}
    answer = w.client.post(page, data={"csrf_token": token, **field}, headers=foreign)
    assert answer.status_code == 403 and "another site" in answer.text
    assert ratings(w, subscriber_id) == {}


def _tampered(path: str) -> str:
    token = path.removeprefix("/rate/").removesuffix("/less")
    payload, signature = token.rsplit(".", 1)
    return f"/rate/{payload}.{signature[::-1]}/less"


def test_forged_expired_revoked_and_wrong_purpose_links_change_nothing(w, sent):
    subscriber_id, mail, papers = sent
    good = rate_paths(mail)["less"][0]
    manage = w.token("manage", subscriber_id)
    rate_token = good.removeprefix("/rate/").removesuffix("/less")
    csrf_token = w.csrf_token(w.client.get(good).text)
    field = {"csrf_token": csrf_token, FIELD_PREFIX + papers[0]: "less"}

    def refused(path: str, status: int, words: str) -> None:
        for answer in (w.client.get(path), w.client.post(path.removesuffix("/less"), data=field)):
            assert answer.status_code == status, (path, answer.status_code)
            assert words in answer.text
        assert ratings(w, subscriber_id) == {}

    refused(_tampered(good), 400, "This link is not valid")
    refused(f"/rate/{manage}/less", 400, "This link is not valid")  # a manage link's token
    choice = w.client.get(good.removesuffix("/less") + "/up")  # a rating the page has not
    assert choice.status_code == 400 and "This link is not valid" in choice.text
    # A rating link's token opens no other page.
    for other in (f"/manage/{rate_token}", f"/digest/{rate_token}", f"/unsubscribe/{rate_token}"):
        assert w.client.get(other).status_code == 400
    # Old digests' links expire...
    w.travel(timedelta(days=tokens.RATE_LINK_DAYS + 1))
    refused(good, 410, "This rating link has expired")
    w.web.clock = storage.utcnow
    # ...and every link dies when the subscriber unsubscribes (their link key changes).
    with w.db.session() as session:
        subscriber = storage.subscriber_by_id(session, subscriber_id)
        subscriptions.unsubscribe(session, subscriber, storage.utcnow())
    refused(good, 410, "This link is no longer valid")


def test_the_digest_page_in_the_browser_links_its_cards_to_the_rating_page(w, sent):
    subscriber_id, mail, papers = sent
    text = mail.get_body(("plain",)).get_content()
    view = urlsplit(re.search(r"View in browser: (\S+)", text).group(1)).path
    page = w.client.get(view)
    hrefs = RATE_HREF.findall(page.text)
    assert len(hrefs) == 2 * len(papers)
    assert w.client.get(urlsplit(hrefs[1][0]).path + "/less").status_code == 200


def test_the_manage_page_lists_the_rated_papers_and_clears_one_or_all(w, sent):
    subscriber_id, mail, papers = sent
    page = rate_paths(mail)["more"][0].removesuffix("/more")
    marks = {FIELD_PREFIX + papers[0]: "more", FIELD_PREFIX + papers[1]: "less"}
    w.post_form(page, **marks)
    with w.db.session() as session:
        storage.set_rating(
            session, subscriber_id, "2401.00001", 1, origin="import", now=storage.utcnow()
        )
    manage = w.path("manage", subscriber_id)
    html = w.client.get(manage).text
    block = html[html.index('id="ratings-heading"') :]
    day = storage.utcnow().date()
    with w.db.session() as session:
        titles = storage.papers_by_id(session, papers[:2])
    assert titles[papers[0]].title.split()[0] in block
    assert block.count("▲ More like this") == 2 and block.count("▼ Less like this") == 1
    assert f"from your digest of {day.day} {day:%B %Y}" in block
    assert "arXiv:2401.00001" in block and "imported" in block  # not fetched yet: its id

    cleared = w.post_form(manage, f"{manage}/ratings/clear", paper=papers[1])
    assert cleared.status_code == 303
    assert "That rating is cleared." in w.client.get(cleared.headers["location"]).text
    assert set(ratings(w, subscriber_id)) == {papers[0], "2401.00001"}
    # Not the subscriber's: clearing another reader's rating by its paper id does nothing to it.
    other = w.add("other@example.org")
    with w.db.session() as session:
        storage.set_rating(session, other, papers[0], -1, origin="web", now=storage.utcnow())
    assert w.post_form(manage, f"{manage}/ratings/clear-all").status_code == 303
    assert ratings(w, subscriber_id) == {}
    assert set(ratings(w, other)) == {papers[0]}
    assert "You have not rated any paper yet" in w.client.get(manage).text
    # Without the form's token nothing is cleared.
    assert w.client.post(f"/manage/{w.token('manage', other)}/ratings/clear-all").status_code == 403
    assert set(ratings(w, other)) == {papers[0]}


def test_download_my_data_is_a_json_attachment_of_profile_ratings_and_deliveries(w, sent):
    subscriber_id, mail, papers = sent
    page = rate_paths(mail)["less"][0].removesuffix("/less")
    w.post_form(page, **{FIELD_PREFIX + papers[0]: "less"})
    manage = w.path("manage", subscriber_id)
    answer = w.post_form(manage, f"{manage}/data")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    assert re.fullmatch(
        r'attachment; filename="paper-digest-data-\d{4}-\d\d-\d\d\.json"',
        answer.headers["content-disposition"],
    )
    data = json.loads(answer.text)
    assert data["profile"]["email"] == "reader@example.org"
    assert data["profile"]["keywords"] == "diffusion, agents, reasoning"
    (rating,) = data["ratings"]
    assert rating["paper_id"] == papers[0] and rating["rating"] == "less"
    assert rating["origin"] == "email" and rating["title"]
    (delivery,) = data["deliveries"]
    assert delivery["state"] == "sent" and delivery["sent_at"]
    assert [paper["id"] for paper in delivery["papers"]] == papers
    # The file holds no secret that signs the subscriber's links.
    assert w.get(subscriber_id).link_key not in answer.text
    # A GET of the address downloads nothing, and a form from elsewhere is refused.
    assert w.client.get(f"{manage}/data").status_code == 405
    assert w.client.post(f"{manage}/data").status_code == 403


def test_a_digest_of_fifty_papers_is_rated_in_one_go(w, web_papers, outbox):
    # More fields than the other forms allow (32): one per paper, up to digest_size's 50.
    with w.db.session() as session:
        demo = storage.recent_papers(session)
    copies = [
        dataclasses.replace(paper, id=f"2612.{n:05d}", title=f"{paper.title} ({n})")
        for n, paper in enumerate(demo[:20])
    ]
    pipeline.load_papers(w.db, copies, source="hf_daily", url="file:copies")
    subscriber_id = w.add("many@example.org", keywords="model, language, agents", digest_size=50)
    assert pipeline.plan(w.db, w.settings, edition=storage.utcnow().date()).planned == 1
    assert pipeline.deliver(w.db, w.settings).sent == 1
    (mail,) = outbox()
    with w.db.session() as session:
        (row,) = storage.sent_deliveries(session, subscriber_id)
    assert len(row.items) > 40  # the mail shows those that fit below the cap; the page all
    page = rate_paths(mail)["more"][0].removesuffix("/more")
    fields = {f"{FIELD_PREFIX}{paper}": "more" for paper in checked(w.client.get(page).text)}
    assert len(fields) == len(row.items)
    assert w.post_form(page, **fields).status_code == 303
    assert len(ratings(w, subscriber_id)) == len(row.items)
