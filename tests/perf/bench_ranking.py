"""Ranking at scale: 1,000 papers x 100,000 synthetic profiles, time and peak memory.

Papers are synthesized from the relevance set and the recorded Hugging Face day (new ids,
abstracts mixed from two source papers, HF keywords, categories, upvotes). Profiles draw 2-6
entries from a vocabulary built from those papers' own words, phrases, HF keywords and
acronyms, with a popularity skew (subscribers share keywords), exclusions, authors and
categories. Each subscriber has a few already-sent papers. A naive baseline (one profile at a
time, a plain per-paper scorer) runs on a sample and is extrapolated.

    .venv/bin/python tests/perf/bench_ranking.py            # 1,000 x 100,000, target <= 5 s, 1 GiB
    .venv/bin/python tests/perf/bench_ranking.py --quick    # 200 x 2,000
    .venv/bin/python tests/perf/bench_ranking.py --ratings  # + subscribers who rated papers

With --ratings the same profiles are ranked a second time, on a fresh index, after 30% of the
subscribers rated 20 papers (half liked, half disliked, drawn from 5,000 papers of earlier
editions, outside the window) and 10% liked 10 (profile likes, from the same pool): ranking
(text vectors of the window and the rated papers included) must take at most 2x the
keywords-only run above, peak RSS at most 1.5 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psutil

from newsletter.analysis import (
    CURATED_ACRONYMS,
    EXACT,
    STOPWORDS,
    inflection,
    names_match,
    phrase_spans,
    split_words,
)
from newsletter.paper import Paper, read_jsonl
from newsletter.profile import Entry, Profile, parse_profile
from newsletter.ranking import (
    CATEGORY_SHARE,
    COVERAGE_FLOOR,
    EXACT_SHARE,
    K1,
    LOOSE_SHARE,
    Match,
    PaperIndex,
)

ROOT = Path(__file__).resolve().parents[2]
RELEVANCE = ROOT / "tests" / "fixtures" / "relevance" / "papers.jsonl"
HF_DAY = ROOT / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
CATEGORIES = ["cs.LG", "cs.CL", "cs.CV", "cs.AI", "stat.ML", "cs.RO", "cs.IR", "eess.AS"]
TODAY = date(2026, 6, 12)


def seed_papers() -> list[Paper]:
    papers = read_jsonl(RELEVANCE.read_text(encoding="utf-8"))
    for item in json.loads(HF_DAY.read_text(encoding="utf-8")):
        raw = item["paper"]
        papers.append(
            Paper(
                id=raw["id"],
                title=raw["title"],
                abstract=raw.get("summary", ""),
                authors=[a["name"] for a in raw.get("authors", [])],
                upvotes=int(raw.get("upvotes") or 0),
                keywords=list(raw.get("ai_keywords") or []),
            )
        )
    return papers


def synthesize_papers(n: int, rng: random.Random) -> list[Paper]:
    """n papers with new ids: a seed's title, its abstract's first half + another's second."""
    seeds = seed_papers()
    keyword_pool = [k for p in seeds for k in p.keywords]
    papers = []
    for i in range(n):
        a, b = rng.choice(seeds), rng.choice(seeds)
        first, second = _sentences(a.abstract), _sentences(b.abstract)
        abstract = " ".join(first[: max(1, len(first) // 2)] + second[len(second) // 2 :])
        papers.append(
            replace(
                a,
                id=f"2606.{10000 + i:05d}",
                abstract=abstract,
                authors=a.authors or rng.sample([x for p in seeds for x in p.authors], 3),
                published=TODAY - timedelta(days=rng.choice([0, 0, 0, 1, 2])),
                upvotes=int(rng.paretovariate(1.2)) - 1,
                categories=rng.sample(CATEGORIES, rng.choice([1, 1, 2, 3])),
                keywords=a.keywords or rng.sample(keyword_pool, 5),
                source="hf_daily",
            )
        )
    return papers


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text) if s]


def vocabulary(papers: Sequence[Paper]) -> dict[str, list[str]]:
    """Entry pools drawn from the papers themselves, most frequent first."""
    words: Counter[str] = Counter()
    phrases: Counter[str] = Counter()
    for paper in papers:
        tokens = re.findall(r"[A-Za-z][A-Za-z-]+", f"{paper.title} {paper.abstract}")
        content = [t for t in tokens if t.lower() not in STOPWORDS and len(t) > 3]
        words.update({t.lower() for t in content})
        for left, right in zip(tokens, tokens[1:], strict=False):
            if left.lower() not in STOPWORDS and right.lower() not in STOPWORDS:
                phrases[f"{left.lower()} {right.lower()}"] += 1
    common = {w for w, c in words.items() if c > len(papers) * 0.3}
    return {
        "word": [w for w, c in words.most_common() if c >= 3 and w not in common][:3000],
        "phrase": [p for p, c in phrases.most_common() if c >= 3][:3000],
        "keyword": sorted({k for p in papers for k in p.keywords if '"' not in k}),
        "acronym": [a.upper() for a in CURATED_ACRONYMS],
        "author": sorted({a for p in papers for a in p.authors if '"' not in a}),
    }


def synthesize_profiles(n: int, pools: dict[str, list[str]], rng: random.Random) -> list[str]:
    """Profile texts of 2-6 entries; popular keywords are popular (Zipf-like draws)."""

    def draw(pool: list[str]) -> str:
        return pool[min(int(rng.paretovariate(0.6)) - 1, len(pool) - 1)]

    profiles = []
    for _ in range(n):
        entries = []
        for _ in range(rng.randint(2, 6)):
            kind = rng.choices(
                ["word", "phrase", "quoted", "keyword", "acronym", "author", "cat"],
                weights=[30, 25, 15, 15, 8, 4, 3],
            )[0]
            if kind == "quoted":
                entries.append(f'"{draw(pools["phrase"])}"')
            elif kind == "author":
                entries.append(f'author:"{rng.choice(pools["author"])}"')
            elif kind == "cat":
                entries.append(f"cat:{rng.choice(CATEGORIES)}")
            else:
                entries.append(draw(pools[kind]))
        if rng.random() < 0.2:
            entries.append(f"-{draw(pools['word'])}")
        if rng.random() < 0.1:
            entries[0] += "^2"
        profiles.append(", ".join(entries))
    return profiles


def already_sent(n: int, papers: Sequence[Paper], rng: random.Random) -> list[frozenset[str]]:
    """Papers each subscriber already had: 0-3 of this edition's (sent on an earlier day while
    still recent) and a couple of older ones, as the planner passes them."""
    old = [f"2605.{i:05d}" for i in range(500)]
    return [
        frozenset(rng.sample(old, 2) + [p.id for p in rng.sample(list(papers), rng.randint(0, 3))])
        for _ in range(n)
    ]


# The naive baseline ------------------------------------------------------------------------


def naive_rank(
    index: PaperIndex, profile: Profile, top_k: int, min_score: float, sent: frozenset[str]
) -> list[tuple[str, float]]:
    """One profile, one paper, one entry at a time: what a first implementation would do."""
    selecting = [e for e in profile.positives if e.kind != "cat"]
    categories = [e for e in profile.positives if e.kind == "cat"]
    if not selecting:
        selecting, categories = categories, []
    total = sum(e.weight for e in selecting)
    scored = []
    for d, paper in enumerate(index.papers):
        if paper.id in sent or any(_worth(index, e, d) > 0 for e in profile.exclusions):
            continue
        worth = [_worth(index, e, d) for e in selecting]
        if not any(worth):
            continue
        relevance = sum(e.weight * w for e, w in zip(selecting, worth, strict=True)) / total
        steer = 1.0
        if categories and not any(_worth(index, e, d) > 0 for e in categories):
            steer = 1 - CATEGORY_SHARE
        score = 100 * relevance * steer * float(index.prior[d])
        if score >= max(min_score, 1e-6):
            scored.append((score, d))
    scored.sort(key=lambda x: (-x[0], x[1]))
    return [(index.papers[d].id, s) for s, d in scored[:top_k]]


def _worth(index: PaperIndex, entry: Entry, d: int) -> float:
    """What an entry's match in paper d is worth: coverage floor + BM25F saturation."""
    paper = index.papers[d]
    if entry.kind == "author":
        return float(any(names_match(entry.terms, _name(a)) for a in paper.authors))
    if entry.kind == "cat":
        wanted = entry.terms[0]
        return float(
            any(c.lower() == wanted or c.lower().startswith(wanted + ".") for c in paper.categories)
        )
    phrase = index.analyzer.query_terms(entry.value)
    strength = _phrase(index, phrase, d)
    exact = entry.exact if len(phrase) == 1 and not phrase[0].startswith("\u00a7") else ""
    if exact:
        strength = (1 - EXACT_SHARE) * strength + EXACT_SHARE * _exact(index, exact, d)
    floor = COVERAGE_FLOOR if strength > 0 else 0.0
    if entry.mode == "loose" and not entry.exclude:
        words = index.analyzer.bag_terms(entry.value)
        each = [_phrase(index, (w,), d) for w in words]
        loose = 0.0
        if words and all(each):
            idf = [index.idf(w) for w in words]
            loose = sum(i * s for i, s in zip(idf, each, strict=True)) / max(sum(idf), 1e-9)
            floor = floor or LOOSE_SHARE * COVERAGE_FLOOR
        strength = (1 - LOOSE_SHARE) * strength + LOOSE_SHARE * loose
    return floor + (1 - COVERAGE_FLOOR) * strength if strength > 0 else 0.0


def _phrase(index: PaperIndex, phrase: tuple[str, ...], d: int) -> float:
    tf = 0.0
    for field in index.fields.values():
        tokens = field.tokens[d]
        count = (
            len(tokens.get(phrase[0], ()))
            if len(phrase) == 1
            else len(phrase_spans(tokens, phrase))
        )
        tf += float(field.norm[d]) * count
    return tf / (tf + K1)


def _exact(index: PaperIndex, form: str, d: int) -> float:
    """Saturation of a word's own inflections, from per-paper form counts made once."""
    tf = 0.0
    for name, field in index.fields.items():
        tf += float(field.norm[d]) * _FORMS[(name, d)].get(form, 0)
    return tf / (tf + K1)


_FORMS: dict[tuple[str, int], Counter[str]] = {}


def count_forms(index: PaperIndex) -> None:
    """Per paper and field, how often each inflection-free word form occurs."""
    for name in index.fields:
        for d, paper in enumerate(index.papers):
            words = split_words(_field_text(paper, name))
            _FORMS[(name, d)] = Counter(EXACT + inflection(w.folded) for w in words)


def _field_text(paper: Paper, name: str) -> str:
    if name == "keywords":
        return "; ".join(paper.keywords)
    return paper.title if name == "title" else paper.abstract


def _name(author: str) -> tuple[str, ...]:
    from newsletter.analysis import name_words

    return name_words(author)


# Running -------------------------------------------------------------------------------------


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 papers x 2,000 profiles")
    parser.add_argument("--papers", type=int)
    parser.add_argument("--profiles", type=int)
    parser.add_argument("--naive", type=int, help="profiles for the naive baseline")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--ratings", action="store_true", help="also rank with ratings")
    args = parser.parse_args(argv)
    n_papers = args.papers or (200 if args.quick else 1000)
    n_profiles = args.profiles or (2000 if args.quick else 100_000)
    n_naive = min(args.naive or (100 if args.quick else 1000), n_profiles)
    rng = random.Random(args.seed)

    papers = synthesize_papers(n_papers, rng)
    texts = synthesize_profiles(n_profiles, vocabulary(papers), rng)
    sent = already_sent(n_profiles, papers, rng)
    now = datetime(2026, 6, 12, 7, tzinfo=UTC)
    base_rss = rss_mib()
    print(f"{n_papers:,} papers, {n_profiles:,} profiles ({len(set(texts)):,} distinct texts)")

    start, cpu = time.perf_counter(), time.process_time()
    profiles = [parse_profile(t) for t in texts]
    parse_s, parse_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    index = PaperIndex(papers, now=now)
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    results = index.rank_many(profiles, top_k=10, min_score=5.0, exclude_ids=sent)
    rank_s, rank_cpu = time.perf_counter() - start, time.process_time() - cpu
    rank_peak = peak_rss_mib()
    start, cpu = time.perf_counter(), time.process_time()
    distinct = {id(m._snippet_html) for r in results for m in r}  # type: ignore[attr-defined]
    built = sum(len(m.snippet_html) + len(m.snippet_text) > 0 for r in results for m in r)
    snippet_s, snippet_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_rss_mib()

    matches = sum(len(r) for r in results)
    print(f"wall (CPU) seconds; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"parse profiles     {parse_s:6.2f} ({parse_cpu:.2f})  {len(set(profiles)):,} distinct")
    print(f"build index        {build_s:6.2f} ({build_cpu:.2f})")
    print(
        f"rank_many          {rank_s:6.2f} ({rank_cpu:.2f})  {matches:,} matches, "
        f"{sum(1 for r in results if not r):,} profiles with none"
    )
    print(
        f"read all snippets  {snippet_s:6.2f} ({snippet_cpu:.2f})  {len(distinct):,} distinct "
        f"excerpts built for {built:,} matches"
    )
    total, total_cpu = build_s + rank_s, build_cpu + rank_cpu
    print(f"index + rank       {total:6.2f} ({total_cpu:.2f})  target <= 5 s")
    everything, everything_cpu = total + snippet_s + parse_s, total_cpu + snippet_cpu + parse_cpu
    print(
        f"  + every snippet  {total + snippet_s:6.2f} ({total_cpu + snippet_cpu:.2f}); "
        f"+ parsing too {everything:.2f} ({everything_cpu:.2f})"
    )
    print(
        f"peak RSS           {rank_peak:6.0f} MiB after rank_many (target <= 1024), "
        f"{peak:.0f} MiB with every snippet built ({base_rss:.0f} MiB before)"
    )
    _check(results, sent)

    count_forms(index)
    start = time.perf_counter()
    naive = [
        naive_rank(index, p, 10, 5.0, s)
        for p, s in zip(profiles[:n_naive], sent[:n_naive], strict=True)
    ]
    naive_s = time.perf_counter() - start
    projected = naive_s * n_profiles / n_naive
    print(
        f"naive loop         {naive_s:7.2f} s for {n_naive:,} profiles -> "
        f"{projected:,.0f} s projected for {n_profiles:,}"
    )
    print(f"speed-up           {projected / rank_s:7.0f} x (rank_many vs naive, ranking only)")
    agree = _agreement(naive, results[:n_naive])
    print(f"agreement          {agree:7.1%} of naive top-10 ids also chosen by rank_many")
    ok = min(total, total_cpu) <= 5.0 and rank_peak <= 1024 if not args.quick else True
    if args.ratings:
        del results, naive, distinct  # the keyword run's matches need not stay in memory
        ok = ratings_run(papers, profiles, sent, rng, now, min(rank_s, rank_cpu)) and ok
    return 0 if ok else 1


# Ranking with ratings ----------------------------------------------------------------------


def ratings_run(
    papers: list[Paper],
    profiles: list[Profile],
    sent: list[frozenset[str]],
    rng: random.Random,
    now: datetime,
    keywords_only: float,
) -> bool:
    """Rank everyone again with ratings (see the module docstring); True if on target."""
    from newsletter.ranker import PaperWindow, RankingPolicy, feedbacks_of

    older = [replace(p, id=f"2605.{i:05d}") for i, p in enumerate(synthesize_papers(5000, rng))]
    texts = {p.id: p for p in older}
    pool = list(texts)
    ratings: list[dict[str, int]] = []
    likes: list[tuple[str, ...]] = []
    for _ in profiles:
        rated = rng.sample(pool, 20) if rng.random() < 0.3 else []
        ratings.append({pid: 1 if i % 2 else -1 for i, pid in enumerate(rated)})
        likes.append(tuple(rng.sample(pool, 10)) if rng.random() < 0.1 else ())
    policy = RankingPolicy(min_score=5.0, popularity_weight=0.05, digest_size=10, window_days=2)
    window = PaperWindow.of(policy, papers, now)
    with_ratings = sum(1 for r, lk in zip(ratings, likes, strict=True) if r or lk)
    # The liked papers are profile likes (like: entries), as parsing the profiles gives them.
    liking = [replace(p, likes=lk) if lk else p for p, lk in zip(profiles, likes, strict=True)]
    start, cpu = time.perf_counter(), time.process_time()
    feedback = feedbacks_of(liking, ratings, texts)
    excluded = [s | set(r) | set(lk) for s, r, lk in zip(sent, ratings, likes, strict=True)]
    results = window.rank(
        liking, top_k=[10] * len(profiles), exclude_ids=excluded, feedback=feedback
    )
    rated_s, rated_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_rss_mib()
    _check(results, excluded)
    said = sum(1 for r in results for m in r if m.liked is not None)
    ratio = min(rated_s, rated_cpu) / keywords_only
    print(
        f"with ratings       {rated_s:6.2f} ({rated_cpu:.2f})  {with_ratings:,} subscribers rated "
        f"or liked papers; {said:,} matches say which liked paper they are like"
    )
    print(f"ratings / keywords {ratio:6.2f} x  target <= 2 (ranking only, same process)")
    print(f"peak RSS           {peak:6.0f} MiB with ratings (target <= 1536)")
    return ratio <= 2.0 and peak <= 1536


def _check(results: list[list[Match]], sent: Sequence[frozenset[str]]) -> None:
    for matches, already in zip(results, sent, strict=True):
        assert len(matches) <= 10
        assert not any(m.paper_id in already for m in matches)
        assert all(0 <= m.score <= 100 for m in matches)
        assert all(a.score >= b.score for a, b in zip(matches, matches[1:], strict=False))


def _agreement(naive: list[list[tuple[str, float]]], fast: list[list[Match]]) -> float:
    same = total = 0
    for slow, quick in zip(naive, fast, strict=True):
        chosen = {m.paper_id for m in quick}
        total += len(slow)
        same += sum(1 for pid, _ in slow if pid in chosen)
    return same / total if total else 1.0


if __name__ == "__main__":
    sys.exit(main())
