"""Starting from papers you like on the sign-up and settings pages: an uploaded export
becomes the profile's liked papers, the other entries are named by title, a broken file
changes nothing, and the papers are fetched later from a local arXiv API."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from newsletter import profile
from newsletter.likes import fetching
from newsletter.models import FETCH_MISSING
from tests.support.likes import api_server, rows, settings_for, stored


@pytest.fixture
def api():
    yield from api_server()


@pytest.fixture
def fetch_settings(settings, api):
    return settings_for(settings, api)


FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "likes"
BIB_IDS = ["2606.13677", "2606.13591", "2606.13568", "2606.13515"]
UNKNOWN = "2401.99999"  # in the CSV; arXiv has no such paper
TEXTAREA = re.compile(r'<textarea id="(\w+)" name="\w+"[^>]*>([^<]*)</textarea>', re.S)


def upload(w, subscriber_id: int, name: str, **fields):
    """Open the settings page and send its form back as shown, with the export attached."""
    page = w.client.get(w.path("manage", subscriber_id)).text
    values = {key: html.unescape(value) for key, value in TEXTAREA.findall(page)}
    data = {
        "csrf_token": w.csrf_token(page),
        "send_hour": "7",
        "timezone": "UTC",
        "digest_size": "10",
        **values,
        **fields,
    }
    files = {"liked_file": (name, (FIXTURES / name).read_bytes(), "application/octet-stream")}
    return w.client.post(w.path("manage", subscriber_id), data=data, files=files)


def save(w, subscriber_id: int, **fields):
    """Send the settings form (keywords "diffusion", 07:00 UTC, 10 papers) with `fields`."""
    values = {"keywords": "diffusion", "send_hour": "7", "timezone": "UTC", "digest_size": "10"}
    return w.post_form(w.path("manage", subscriber_id), **{**values, **fields})


def said(page) -> str:
    """The page's text as a reader sees it: entities decoded, runs of spaces as one."""
    return " ".join(html.unescape(page if isinstance(page, str) else page.text).split())


def likes_of(w, subscriber_id: int) -> tuple[str, ...]:
    return profile.parse_profile(w.get(subscriber_id).keywords).likes


# The import ----------------------------------------------------------------------------------


def test_a_bibtex_and_a_zotero_csv_are_liked_fetched_and_the_rest_reported(
    w, db, fetch_settings, api
):
    active = w.add(keywords="diffusion")
    page = upload(w, active, "library.bib")
    assert page.status_code == 200, page.text
    text = said(page)
    assert "From your BibTeX file:" in text and "4 arXiv papers of 7 entries" in text
    assert "3 entries are not arXiv papers" in text
    for title, reason in [
        ("Protein structure prediction with nested braces, and a comma", "DOI 10.1038/"),
        (r"The \TeXbook", "no arXiv id"),
        ("A paper whose eprint is elsewhere", "its eprint is on PubMed, not arXiv"),
    ]:
        assert f"<cite>{title}</cite>: " in text and reason in text
    assert likes_of(w, active) == tuple(BIB_IDS)
    assert profile.parse_profile(w.get(active).keywords).keywords_text == "diffusion"
    assert sorted(rows(db)) == sorted(BIB_IDS) and api.requests == []  # never in the request

    page = upload(w, active, "zotero.csv")  # adds to the likes shown in the box
    assert "From your CSV file:" in said(page)
    assert "<cite>A blog post with no identifiers</cite>" in page.text
    assert likes_of(w, active) == (*BIB_IDS, UNKNOWN)

    report = fetching.fetch_liked_papers(db, fetch_settings)
    assert report.as_dict() == {"stored": 4, "missing": 1, "retry": 0, "requests": 1}
    assert sorted(api.requests[0]) == sorted([*BIB_IDS, UNKNOWN])
    papers = stored(db)
    assert papers["2606.13677"].title == "Mana: Dexterous Manipulation of Articulated Tools"
    # Dated by publication, so an old liked paper never joins the papers planned as news.
    assert papers["2606.13677"].first_seen_at.date() == papers["2606.13677"].published
    assert {paper: row.state for paper, row in rows(db).items()} == {UNKNOWN: FETCH_MISSING}
    shown = w.client.get(w.path("manage", active)).text
    assert f"arXiv has no paper with this id: <code>{UNKNOWN}</code>" in said(shown)

    assert fetching.fetch_liked_papers(db, fetch_settings).requests == 0  # never asked again


def test_a_sign_up_with_an_export_queues_its_papers_once_confirmed(w, db, outbox):
    files = {"liked_file": ("My Library.ris", (FIXTURES / "library.ris").read_bytes(), "")}
    token = w.csrf_token(w.client.get("/").text)
    form = {
        "csrf_token": token,
        "email": "ada@example.org",
        "keywords": "",  # only liked papers: a profile may have no keywords
        "liked_papers": "https://arxiv.org/abs/2606.13591v2",
        "send_hour": "7",
        "timezone": "UTC",
        "digest_size": "10",
    }
    page = w.client.post("/", data=form, files=files)
    assert page.status_code == 200, page.text
    assert "will be among the papers you like once you confirm" in said(page)
    assert "<cite>Highly accurate protein structure prediction with AlphaFold</cite>" in page.text
    w.settle()
    assert rows(db) == {}  # nothing is fetched for a sign-up nobody confirmed
    (message,) = outbox()
    confirm = w.confirm_path(message)
    w.post_form(confirm)
    subscriber = w.by_email("ada@example.org")
    assert subscriber is not None and subscriber.state == "active"
    assert profile.parse_profile(subscriber.keywords).likes == (
        "2606.13591",
        "2606.13501",
        "2606.13677",
    )
    assert sorted(rows(db)) == ["2606.13501", "2606.13591", "2606.13677"]


def test_a_malformed_upload_changes_nothing(w, db):
    active = w.add(keywords="diffusion, like:2606.13677")
    before = w.get(active).keywords
    assert list(rows(db)) == ["2606.13677"]  # queued when the operator added them
    page = w.client.get(w.path("manage", active)).text
    data = {
        "csrf_token": w.csrf_token(page),
        "keywords": "agents",
        "liked_papers": "2606.13677\n2606.13591",
        "send_hour": "9",
        "timezone": "UTC",
        "digest_size": "10",
    }
    broken = b"@article{a, title = {never closed, eprint = {2606.13568}\n"
    answer = w.client.post(
        w.path("manage", active), data=data, files={"liked_file": ("lib.bib", broken, "")}
    )
    assert answer.status_code == 422
    assert "The file could not be read, so nothing was saved: line 1: this entry never ends" in (
        said(answer)
    )
    after = w.get(active)
    assert (after.keywords, after.send_hour) == (before, 7)
    assert list(rows(db)) == ["2606.13677"]


def test_a_bad_line_in_the_box_is_named_and_nothing_is_saved(w):
    active = w.add(keywords="diffusion")
    answer = save(w, active, liked_papers="2606.13677\nhttps://example.org/paper\n2606.13591")
    assert answer.status_code == 422
    assert "Line 2: not an arXiv id or address." in said(answer)
    assert w.get(active).keywords == "diffusion"


def test_taking_a_line_out_of_the_box_unlikes_the_paper(w):
    active = w.add(keywords="diffusion, like:2606.13677, like:2606.13591")
    page = w.client.get(w.path("manage", active)).text
    assert dict(TEXTAREA.findall(page))["liked_papers"] == "2606.13677\n2606.13591"
    answer = save(w, active, liked_papers="2606.13591")
    assert answer.status_code == 303
    assert likes_of(w, active) == ("2606.13591",)


def test_an_upload_past_the_size_limit_is_refused(w, web, settings):
    web.settings = settings.model_copy(update={"likes_upload_bytes": 4096})
    active = w.add(keywords="diffusion")
    page = w.client.get(w.path("manage", active)).text
    data = {"csrf_token": w.csrf_token(page), "keywords": "x", "send_hour": "7"}
    data |= {"timezone": "UTC", "digest_size": "10"}
    big = b"@misc{a, note = {" + b"x" * 5000 + b"}}"
    answer = w.client.post(
        w.path("manage", active), data=data, files={"liked_file": ("a.bib", big, "")}
    )
    assert answer.status_code == 422 and "The file is larger than 4 KB" in answer.text
    huge = b"x" * (5 * 1024 * 1024)  # past what the page accepts at all
    answer = w.client.post(
        w.path("manage", active), data=data, files={"liked_file": ("a.bib", huge, "")}
    )
    assert answer.status_code == 413
    assert w.get(active).keywords == "diffusion"


def test_an_upload_beside_another_mistake_keeps_its_papers_in_the_box(w):
    token = w.csrf_token(w.client.get("/").text)
    form = {"csrf_token": token, "email": "not an address", "keywords": "agents"}
    form |= {"liked_papers": "2606.13591", "send_hour": "7", "timezone": "UTC"}
    form |= {"digest_size": "10"}
    files = {"liked_file": ("lib.ris", (FIXTURES / "library.ris").read_bytes(), "")}
    page = w.client.post("/", data=form, files=files)
    assert page.status_code == 422
    shown = dict(TEXTAREA.findall(page.text))["liked_papers"]
    assert shown.splitlines() == ["2606.13591", "2606.13501", "2606.13677"]
