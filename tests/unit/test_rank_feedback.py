"""Ranking that learns from the reader: likes and dislikes fused with the keywords, one ranker
for the planner, the pages and `newsletter rank --like/--dislike`."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from newsletter import pipeline, storage, subscriptions
from newsletter.cli import app
from newsletter.config import Settings, load_settings
from newsletter.db import Database
from newsletter.models import Delivery
from newsletter.paper import Paper, read_jsonl
from newsletter.planned import PlannedItem
from newsletter.profile import Profile, parse_profile
from newsletter.ranker import PaperWindow, RankingPolicy, rank_profile
from newsletter.ranking import PaperIndex
from newsletter.ranking.feedback import KEYWORD_PRIOR, MAX_SHARE
from newsletter.render import DigestItem, EditionRenderer
from tests.unit.test_ranker import cli_rank, env  # noqa: F401  (a deployment's own settings)

RELEVANCE = Path(__file__).resolve().parents[1] / "fixtures" / "relevance"
NOW = datetime(2026, 6, 12, 7, tzinfo=UTC)


def relevance_papers() -> list[Paper]:
    return read_jsonl((RELEVANCE / "papers.jsonl").read_text(encoding="utf-8"))


def relevant(query: str) -> list[str]:
    queries = json.loads((RELEVANCE / "queries.json").read_text(encoding="utf-8"))
    return next(q["relevant_in_order"] for q in queries if q["query"] == query)


@pytest.fixture(scope="module")
def papers() -> list[Paper]:
    return relevance_papers()


def window_of(papers: list[Paper], min_score: float = 5.0) -> PaperWindow:
    policy = RankingPolicy(
        min_score=min_score, popularity_weight=0.05, digest_size=10, window_days=2
    )
    return PaperWindow.of(policy, papers, NOW)


def ids(matches) -> list[str]:
    return [m.paper_id for m in matches]


def test_liked_papers_outside_the_window_rank_without_keywords(papers):
    """Five liked papers read from elsewhere (not in the window), no keywords: the window's
    papers on the same topic come first, and each says which liked paper it is like."""
    liked = relevant("supervision")[:5]
    history = {p.id: p for p in papers if p.id in liked}
    window = window_of([p for p in papers if p.id not in liked])
    ratings = dict.fromkeys(liked, 1)
    matches = rank_profile(window, Profile(()), ratings=ratings, papers=history)
    assert len(matches) == 10
    wanted = set(relevant("supervision")[5:])
    assert sum(m.paper_id in wanted for m in matches) >= 7  # half the papers are relevant
    titles = {p.title for p in history.values()}
    assert all(m.liked is not None and m.liked[1] in titles for m in matches)
    assert all(m.matched == () for m in matches)
    # Without the liked papers' text nothing is learned, and nothing is listed.
    assert rank_profile(window, Profile(()), ratings=ratings) == []


def test_liked_papers_beside_an_empty_window_rank_nothing_and_fail_nothing(papers):
    """A day with no papers yet (the settings page of a reader of liked papers)."""
    liked = relevant("supervision")[:5]
    history = {p.id: p for p in papers if p.id in liked}
    window = window_of([])
    assert rank_profile(window, Profile(()), ratings=dict.fromkeys(liked, 1), papers=history) == []


def test_rated_and_liked_papers_are_never_returned(papers):
    window = window_of(papers)
    plain = rank_profile(window, parse_profile("class"), top_k=10)
    rated = {plain[0].paper_id: 1, plain[1].paper_id: -1}
    again = rank_profile(window, parse_profile("class"), top_k=10, ratings=rated)
    assert not set(rated) & set(ids(again))
    assert len(again) == 10


def test_exclusions_still_exclude_what_the_likes_would_bring(papers):
    liked = relevant("class")[:5]
    window = window_of(papers)
    ratings = dict.fromkeys(liked, 1)
    chosen = rank_profile(window, Profile(()), ratings=ratings, top_k=30)
    # A word in several of the papers the likes bring: excluding it removes them all.
    word = "incremental"
    hit = [m.paper_id for m in chosen if word in window.papers[m.paper_id].abstract.lower()]
    assert hit, "the likes should bring papers with the excluded word"
    profile = parse_profile(f"-{word}, like:2401.00001")  # a like whose text is unknown
    excluded = rank_profile(window, profile, ratings=ratings, top_k=30)
    assert excluded and not set(hit) & set(ids(excluded))


def test_a_handful_of_ratings_do_not_swamp_the_keywords(papers):
    """Two likes on another topic reorder at most the margins of a keyword digest: the learned
    part weighs 2 / (2 + KEYWORD_PRIOR) of the score."""
    window = window_of(papers)
    profile = parse_profile("class")
    before = ids(rank_profile(window, profile))
    liked = [p for p in relevant("supervision") if p not in relevant("class")][:2]
    after = rank_profile(window, profile, ratings=dict.fromkeys(liked, 1))
    assert after[0].paper_id == before[0]
    assert len(set(ids(after)) & set(before)) >= 7
    assert all(m.matched for m in after[:5])  # the keywords still choose the top
    # and the share grows with the ratings, to at most MAX_SHARE beside keywords
    assert 2 / (2 + KEYWORD_PRIOR) < MAX_SHARE


def test_a_dislike_sinks_the_papers_near_duplicates(papers):
    """'Less like this' on a paper ranks its near-duplicate (another version of it) lower."""
    original = next(p for p in papers if p.id == relevant("class")[3])
    twin = replace(original, id="seed-twin", title=original.title + " (extended version)")
    window = window_of([*papers, twin])
    profile = parse_profile("class")

    def twin_rank(ratings: dict[str, int]) -> tuple[int, float]:
        matches = rank_profile(window, profile, top_k=len(window), ratings=ratings)
        order = ids(matches)
        score = next((m.score for m in matches if m.paper_id == "seed-twin"), 0.0)
        return (order.index("seed-twin") if "seed-twin" in order else len(window)), score

    position, score = twin_rank({})
    lower_position, lower_score = twin_rank({original.id: -1})
    assert lower_score < score
    assert lower_position > position


def test_papers_with_some_of_an_entry_s_words_say_which_they_have(papers):
    """An entry matches papers with only some of its words too, each labelled by the words
    it has; once the reader rates, every paper still says why (the entry, or its words)."""
    entry = "self-supervised contrastive learning"
    keywords = parse_profile(entry)
    window = window_of(papers)
    by_id = {p.id: p for p in papers}

    def check(matches) -> list:
        part = []
        for m in matches:
            text = f"{by_id[m.paper_id].title} {by_id[m.paper_id].abstract}".lower()
            if m.matched == (entry,):
                assert all(w in text for w in ("self", "supervis", "contrastive", "learn"))
                continue
            (label,) = m.matched
            words = label.split(" + ")
            assert words and set(words) < {"self-supervised", "contrastive", "learning"}
            assert all(w.split("-")[0] in text for w in words)
            part.append(m)
        return part

    alone = rank_profile(window, keywords, top_k=10)
    part = check(alone)
    assert part and len(part) < len(alone)
    assert min(m.score for m in alone if m not in part) > max(m.score for m in part)
    disliked = next(p.id for p in papers if p.id not in ids(alone))
    rated = rank_profile(window, keywords, top_k=10, ratings={disliked: -1})
    check(rated)
    assert set(ids(alone[:3])) <= set(ids(rated))  # what the keywords chose first stays


def test_equal_keywords_with_other_ratings_are_ranked_apart(papers):
    """The index ranks equal profiles once: not when their ratings differ."""
    window = window_of(papers)
    profile = parse_profile("supervision")
    a = {i: 1 for i in relevant("class")[:5]}
    b = {i: 1 for i in relevant("supervision")[:5]}
    alone_a = rank_profile(window, profile, ratings=a)
    alone_b = rank_profile(window, profile, ratings=b)
    assert ids(alone_a) != ids(alone_b)
    from newsletter.ranking.feedback import feedback_of

    texts = window.papers
    feedback = [feedback_of((), a, texts), feedback_of((), b, texts), None]
    together = window.rank(
        [profile, profile, profile],
        top_k=[10, 10, 10],
        exclude_ids=[frozenset(a), frozenset(b), frozenset()],
        feedback=feedback,
    )
    assert [ids(r) for r in together[:2]] == [ids(alone_a), ids(alone_b)]
    assert ids(together[2]) == ids(rank_profile(window, profile))
    assert [(m.score, m.liked) for m in together[0]] == [(m.score, m.liked) for m in alone_a]


def test_keyword_profiles_rank_as_before_beside_rated_ones(papers):
    """A call with some rated profiles leaves the others' rankings as they were."""
    index = PaperIndex(papers, now=NOW)
    profiles = [parse_profile("class"), parse_profile("supervision, -medical")]
    alone = index.rank_many(profiles, top_k=10, min_score=5.0)
    window = window_of(papers)
    from newsletter.ranking.feedback import feedback_of

    mixed = window.rank(
        [*profiles, profiles[0]],
        top_k=[10, 10, 10],
        exclude_ids=[frozenset()] * 3,
        feedback=[None, None, feedback_of((), {relevant("class")[0]: -1}, window.papers)],
    )
    assert [[(m.paper_id, m.score) for m in r] for r in mixed[:2]] == [
        [(m.paper_id, m.score) for m in r] for r in alone
    ]


# The planner and the CLI ----------------------------------------------------------------------


def jsonl(path: Path, papers: list[Paper]) -> Path:
    path.write_text("".join(p.to_json() + "\n" for p in papers), encoding="utf-8")
    return path


def plan_with_ratings(
    day: list[Paper], older: list[Paper], keywords: str, ratings: dict[str, int]
) -> list[dict]:
    """The ledger items the planner writes for a subscriber with these ratings: the day's
    papers just collected, the older (rated) ones stored weeks ago, out of the window."""
    settings = load_settings()
    db = Database(settings)
    db.upgrade()
    try:
        with db.session() as session:
            storage.upsert_papers(session, older, storage.utcnow() - timedelta(days=40))
        pipeline.load_papers(db, day, source="hf_daily", url="file:day.jsonl")
        with db.session() as session:
            subscriber = subscriptions.subscribe(
                session,
                settings,
                email="ada@example.org",
                keywords=keywords,
                now=storage.utcnow(),
                send_hour=0,
                confirmed=True,
            )
            for paper_id, value in ratings.items():
                storage.set_rating(
                    session, subscriber.id, paper_id, value, origin="email", now=storage.utcnow()
                )
        report = pipeline.plan(db, settings)
        assert report.due == 1
        with db.session() as session:
            (row,) = session.scalars(select(Delivery)).all()
            return list(row.items)
    finally:
        db.dispose()


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("keywords", ["supervision", "class, -medical", ""])
def test_the_cli_ranks_with_ratings_exactly_as_the_planner_does(tmp_path, keywords):
    """Same papers, order and scores: liked and disliked papers resolve in --papers and
    --history as a subscriber's ratings do in the window and the stored papers."""
    papers = [p for p in relevance_papers() if "$" not in p.abstract and "\\" not in p.abstract]
    older, day = papers[:30], papers[30:]
    liked = [p.id for p in older[:4]] + [day[0].id]
    disliked = [p.id for p in older[4:7]]
    ratings = {i: 1 for i in liked} | {i: -1 for i in disliked}
    if not keywords:  # a profile of liked papers only: the planner's are like: entries
        keywords = ", ".join(f"like:2401.{10000 + i}" for i in range(2))
        cli_keywords: list[str] = []
    else:
        cli_keywords = ["--keywords", keywords]
    items = plan_with_ratings(day, older, keywords, ratings)
    assert items, "the ratings and keywords should choose papers"
    from_cli = cli_rank(
        "--papers",
        str(jsonl(tmp_path / "day.jsonl", day)),
        "--history",
        str(jsonl(tmp_path / "older.jsonl", older)),
        *cli_keywords,
        "--like",
        ",".join(liked),
        "--dislike",
        ",".join(disliked),
    )
    assert from_cli == [(item["id"], item["score"]) for item in items]
    assert not set(ratings) & {pid for pid, _ in from_cli}
    # What the ratings chose says which liked paper it is like, on the ledger.
    titles = {p.id: p.title for p in papers}
    likes = [item["liked"] for item in items if "liked" in item]
    assert all(titles[pid] == title and pid in liked for pid, title in likes)
    if not cli_keywords:  # nothing but the likes chose them
        assert len(likes) == len(items)


@pytest.mark.usefixtures("env")
def test_the_cli_needs_keywords_or_likes_and_rejects_contradictions(tmp_path):
    day = jsonl(tmp_path / "day.jsonl", relevance_papers()[:20])
    result = CliRunner().invoke(app, ["rank", "--papers", str(day), "--format", "json"])
    assert result.exit_code == 2 and "--like" in result.output
    result = CliRunner().invoke(
        app, ["rank", "--papers", str(day), "--like", "a,b", "--dislike", "b", "--format", "json"]
    )
    assert result.exit_code == 2 and "both liked and disliked: b" in result.output


def test_liked_explanations_are_kept_on_the_ledger_and_old_rows_still_read():
    item = PlannedItem("p1", 40.0, (), "", {}, liked=("2401.00001", "A liked paper"))
    stored = [
        {"id": "p1", "score": 40.0, "liked": ["2401.00001", "A liked paper"]},
        {"id": "p2", "score": 30.0, "matched": ["x"], "snippet_html": ""},
    ]
    read = storage.planned_items(stored)
    assert read[0] == item
    assert read[1].liked is None
    with pytest.raises(storage.MalformedItems, match="liked"):
        storage.planned_items([{"id": "p1", "score": 1.0, "liked": "nope"}])


def test_the_email_card_says_which_liked_paper_chose_it():
    settings = Settings(secret_key="test-secret")
    renderer = EditionRenderer(settings, NOW.date())
    paper = Paper(id="2606.00001", title="Near duplicate", abstract="Some words here.")
    item = DigestItem(paper, matched=(), score=40.0, liked=("2401.00001", "Tom & Jerry learn"))
    email = renderer.render_digest(
        email="ada@example.org",
        keywords_text="like:2401.00001",
        items=[item],
        trending=[],
        unsubscribe_url="https://x/u",
        manage_url="https://x/m",
    )
    assert "like <em>Tom &amp; Jerry learn</em>" in email.html
    assert "like *Tom & Jerry learn*" in email.text


def test_no_paper_is_given_without_a_reason(papers):
    """With no minimum score, a rating lets the learned part bring in papers far down: each
    still says why, by the entry it matched, the liked paper it is like or the profile's
    words it has."""
    window = window_of(papers, min_score=0.0)
    keywords = parse_profile("deep metric learning")
    matches = rank_profile(window, keywords, top_k=40, ratings={papers[0].id: -1})
    assert len(matches) == 40
    assert all(m.matched or m.liked for m in matches)
    by_id = {p.id: p for p in papers}
    by_words = [m for m in matches if m.matched != ("deep metric learning",)]
    assert by_words
    for m in by_words:
        text = f"{by_id[m.paper_id].title} {by_id[m.paper_id].abstract}".lower()
        (label,) = m.matched
        assert set(label.split(" + ")) <= {"deep", "metric", "learning"}
        assert all(word in text for word in label.split(" + "))


def test_what_every_paper_of_the_day_shares_counts_less(papers):
    """The window's mean paper stands for what the reader did not ask for: a paper like most
    of the day's scores below one as like the liked paper but unlike the rest of the day."""
    from newsletter.ranking.feedback import TextSpace

    space = TextSpace(papers)
    background = space.background
    assert background.shape == (len(papers),) and abs(float(background.mean())) < 1e-6
    typical, unusual = int(background.argmax()), int(background.argmin())
    assert background[typical] > 0 > background[unusual]


def test_a_paper_among_papers_the_ratings_favour_is_favoured_too(papers, monkeypatch):
    """The cluster hypothesis: each paper shares NEIGHBOUR_SHARE of the ratings' vote with the
    window papers most like it, so of two papers the likes favour about as much, the one whose
    nearest papers they favour more goes first."""
    import numpy as np

    from newsletter.ranking import feedback

    space = feedback.TextSpace(papers)
    nearest, weights = space.neighbours
    assert nearest.shape == (len(papers), feedback.NEIGHBOURS)
    assert np.allclose(weights.sum(axis=1), 1.0) and (weights >= 0).all()
    cosine = (space.matrix @ space.matrix.T).toarray()
    np.fill_diagonal(cosine, -np.inf)
    for i in range(len(papers)):  # the most alike, never itself
        assert i not in nearest[i]
        assert cosine[i, nearest[i]].min() >= np.sort(cosine[i])[-feedback.NEIGHBOURS] - 1e-6

    liked = [p for p in papers if p.id in set(relevant("deep metric learning")[:3])]
    window = [p for p in papers if p not in liked]
    space = feedback.TextSpace(window)
    args = (space, np.ones(len(window)), [feedback.Feedback(tuple(liked))], [False], [""])
    monkeypatch.setattr(feedback, "NEIGHBOUR_SHARE", 0.0)
    alone = feedback.Learned(*args).learned(np.array([0]))[0]
    monkeypatch.undo()
    shared = feedback.Learned(*args).learned(np.array([0]))[0]
    around = space.neighbourhood @ alone  # what each paper's nearest papers get on their own
    pairs = [
        (a, b)
        for a in range(len(window))
        for b in range(len(window))
        if 0 < alone[b] - alone[a] < 0.01 and around[a] - around[b] > 0.05
    ]
    assert len(pairs) >= 10
    for a, b in pairs:
        assert shared[a] > shared[b]
