"""The rules of liked papers in a profile: the box as typed, the limits, what is queued when."""

from __future__ import annotations

import pytest

from newsletter import profile, storage, subscriptions
from newsletter.models import PaperFetch
from newsletter.subscriptions import (
    MAX_KEYWORDS_CHARS,
    MAX_LIKES,
    MAX_PROFILE_CHARS,
    SubscriptionError,
)

GOOD = {"timezone": "UTC", "send_hour": 7, "digest_size": 10}
# 50 keyword entries of 98 characters: about as long as keywords may be.
LONGEST_KEYWORDS = ", ".join(chr(ord("a") + n % 26) * 97 + str(n % 10) for n in range(50))
MANY = [f"2401.{n:05d}" for n in range(MAX_LIKES)]


def test_the_longest_keywords_leave_room_for_every_liked_paper():
    assert len(LONGEST_KEYWORDS) <= MAX_KEYWORDS_CHARS
    written = LONGEST_KEYWORDS + "\n" + ", ".join(f"like:{paper}" for paper in MANY)
    # As the CLI and the subscriber list give it, and as the forms compose it.
    checked = subscriptions.validate_preferences(keywords=written, **GOOD)
    assert profile.parse_profile(checked.keywords).likes == tuple(MANY)
    formed = subscriptions.validate_preferences(
        keywords=LONGEST_KEYWORDS, liked_papers="\n".join(MANY), **GOOD
    )
    assert formed.keywords == written
    # Addresses written by hand fit too.
    by_hand = (
        LONGEST_KEYWORDS + "\n" + "\n".join(f"like:https://arxiv.org/abs/{p}v12" for p in MANY)
    )
    assert len(by_hand) <= MAX_PROFILE_CHARS
    subscriptions.validate_preferences(keywords=by_hand, **GOOD)


def test_the_keywords_keep_their_own_limit_beside_the_likes():
    with pytest.raises(SubscriptionError, match="under 5,000"):
        subscriptions.validate_preferences(
            keywords="x," * (MAX_KEYWORDS_CHARS // 2) + "y", liked_papers="2401.00001", **GOOD
        )


def test_the_box_takes_ids_and_addresses_one_a_line_or_with_commas():
    typed = (
        "2401.00001v2, arXiv:2401.00002\n\nhttps://arxiv.org/pdf/2401.00003.pdf\nlike:2401.00001"
    )
    assert subscriptions.validate_liked_papers(typed) == ["2401.00001", "2401.00002", "2401.00003"]


def test_the_box_names_its_bad_lines_without_repeating_them():
    with pytest.raises(SubscriptionError) as caught:
        subscriptions.validate_liked_papers("2401.00001\nhttps://evil.example/<b>\n10.1145/1")
    assert caught.value.field == "liked_papers"
    assert caught.value.message.startswith("Lines 2, 3: not an arXiv id or address.")
    assert "evil" not in caught.value.message


def test_more_likes_than_allowed_are_refused_on_the_box():
    with pytest.raises(SubscriptionError) as caught:
        subscriptions.validate_preferences(
            keywords="like:2402.00001", liked_papers="\n".join(MANY), **GOOD
        )
    assert caught.value.field == "liked_papers"
    assert f"{MAX_LIKES + 1} papers you like: keep to {MAX_LIKES}" in caught.value.message


def test_a_profile_of_likes_alone_and_one_with_nothing():
    checked = subscriptions.validate_preferences(keywords="", liked_ids=["2401.00001"], **GOOD)
    assert checked.keywords == "like:2401.00001"
    with pytest.raises(SubscriptionError, match="at least one keyword or a paper you like"):
        subscriptions.validate_preferences(keywords=" ", liked_papers="", **GOOD)


def test_a_form_shows_the_likes_apart_and_saves_them_back_after_the_keywords():
    keywords, likes = subscriptions.liked_papers_of('llm, like:2401.00001, "label noise"\n-x')
    assert (keywords, likes) == ('llm, "label noise"\n-x', ("2401.00001",))
    again = subscriptions.validate_preferences(
        keywords=keywords, liked_papers="\n".join(likes), **GOOD
    )
    assert again.keywords == 'llm, "label noise"\n-x\nlike:2401.00001'


def test_likes_are_queued_when_confirmed_not_when_typed(db, settings):
    now = storage.utcnow()
    with db.session() as session:
        subscriber = subscriptions.subscribe(
            session, settings, email="a@example.org", keywords="like:2401.00001", now=now
        )
        assert session.query(PaperFetch).count() == 0  # pending: anybody could have typed it
        subscriptions.confirm(session, subscriber, now)
        assert [row.paper_id for row in session.query(PaperFetch)] == ["2401.00001"]
        checked = subscriptions.validate_preferences(
            keywords="x", liked_papers="2401.00001\n2401.00002", **GOOD
        )
        subscriptions.update_preferences(session, subscriber, checked, now)
        assert session.query(PaperFetch).count() == 2
