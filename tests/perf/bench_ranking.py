"""Ranking at scale: 1,000 papers x 100,000 profiles against one sparse product, time and memory.

Papers are synthesized from the relevance set and the recorded Hugging Face day (new ids,
abstracts mixed from two source papers, HF keywords, categories, upvotes). Profiles draw 2-6
entries from a vocabulary built from those papers' own words, phrases, HF keywords and
acronyms, with a popularity skew (subscribers share keywords), exclusions, authors and
categories. Each subscriber has a few already-sent papers. Every draw is seeded and ordered,
so two runs rank the same profiles and print the same match counts.

Figures of one run, each the best of --repeat tries (wall and CPU seconds):

  rank_many  what the planner calls: every profile's top 10 with its explanation (entries
             matched, fields, words apart, liked paper: all built here, none left for later)
  excerpts   the abstract excerpt of every match (the planner stores one per match): built
             lazily, all of a call's together on the first read, so this step holds their
             whole cost; index + rank_many + excerpts is everything the planner pays for
  floor      one sparse product + top-k: profiles x terms (entry weights) times terms x papers
             (BM25 saturation x idf), the sent papers dropped, the 10 best sorted, from the
             same start as rank_many (parsed profiles, built index). No scorer of bags of
             words does less; like rank_many it runs with the garbage collector paused.
  naive      one profile, one paper, one entry at a time, each entry analyzed once (cached);
             run on a sample and extrapolated.

Targets (exit status 1 when any is missed): rank_many <= 2x the floor (CPU); index + rank_many
+ excerpts <= 5 s, wall and CPU alike; peak RSS <= 1 GiB; the naive loop's top 10, in order,
for every sampled profile. --record FILE saves every profile's top 10 (ids and scores, in
order) and --against FILE compares with a saved run: the same top 10 as another version of
the ranker, or how many profiles differ.

    .venv/bin/python tests/perf/bench_ranking.py            # 1,000 x 100,000
    .venv/bin/python tests/perf/bench_ranking.py --quick    # 200 x 2,000, no time targets
    .venv/bin/python tests/perf/bench_ranking.py --mode ratings  # subscribers who rated papers

The ratings mode ranks the same profiles in one process through the planner's path
(PaperWindow.rank), --repeat times each in turn, on fresh indexes: keywords only, and after 30%
of the subscribers rated 20 papers (half liked, half disliked, drawn from 5,000 papers of
earlier editions, outside the window) and 10% liked 10 (profile likes, from the same pool).
Targets: ranking with ratings (text vectors of the window and the rated papers included) <= 2x
the keywords-only run, peak RSS <= 1.5 GiB.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import json
import os
import random
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
import psutil
import scipy.sparse as sp

from newsletter.analysis import (
    CURATED_ACRONYMS,
    EXACT,
    STOPWORDS,
    inflection,
    name_words,
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
    PARTIAL_COVER,
    PARTIAL_WORDS,
    Match,
    PaperIndex,
)

ROOT = Path(__file__).resolve().parents[2]
RELEVANCE = ROOT / "tests" / "fixtures" / "relevance" / "papers.jsonl"
HF_DAY = ROOT / "newsletter" / "data" / "hf_daily_papers_2026-06-12.json"
CATEGORIES = ["cs.LG", "cs.CL", "cs.CV", "cs.AI", "stat.ML", "cs.RO", "cs.IR", "eess.AS"]
TODAY = date(2026, 6, 12)
NOW = datetime(2026, 6, 12, 7, tzinfo=UTC)
TOP_K = 10
MIN_SCORE = 5.0
FLOOR_RATIO = 2.0  # rank_many's CPU over the floor's
SECONDS = 5.0  # index + rank_many + excerpts, wall and CPU
RSS_MIB = 1024.0

T = TypeVar("T")


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
        # Distinct words in reading order, not a set's: equal counts then rank the same
        # whatever the hash seed, so two runs draw the same profiles.
        words.update(list(dict.fromkeys(t.lower() for t in content)))
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


class Workload:
    """What one run ranks: the papers, each subscriber's profile and already-sent papers."""

    # Plain classes here, not dataclasses: other benchmarks load this file by path, as a
    # module missing from sys.modules, where @dataclass cannot resolve its annotations.
    def __init__(self, papers: list[Paper], texts: list[str], sent: list[frozenset[str]]):
        self.papers, self.texts, self.sent = papers, texts, sent
        self.profiles: list[Profile] = []


def make_workload(n_papers: int, n_profiles: int, seed: int) -> Workload:
    """The seeded papers, profile texts and sent papers of a run (profiles parsed later)."""
    rng = random.Random(seed)
    papers = synthesize_papers(n_papers, rng)
    texts = synthesize_profiles(n_profiles, vocabulary(papers), rng)
    return Workload(papers, texts, already_sent(n_profiles, papers, rng))


# The floor: one sparse product + top-k ----------------------------------------------------


class FloorInputs(NamedTuple):
    """A bag-of-words scorer's matrices: the words of the profiles, the terms of the papers."""

    queries: Any  # CSR, profiles x terms: the weights of each profile's entries' words
    documents: np.ndarray  # terms x papers: BM25F saturation of the term in the paper x idf
    sent: list[np.ndarray]  # per profile, the index positions of its already-sent papers
    ids: list[str]  # paper id of each index position


def floor_inputs(
    index: PaperIndex, profiles: Sequence[Profile], sent: Sequence[frozenset[str]]
) -> FloorInputs:
    """The words of every positive text entry, weighted, over the index's terms."""
    table = index.positions
    columns: dict[int, int] = {}
    words: dict[str, list[int]] = {}
    rows: list[int] = []
    cols: list[int] = []
    weights: list[float] = []
    for row, profile in enumerate(profiles):
        for entry in profile.positives:
            if entry.kind != "text":
                continue
            found = words.get(entry.value)
            if found is None:
                terms = index.analyzer.bag_terms(entry.value)
                tids = [index.term_ids[t] for t in terms if t in index.term_ids]
                found = words[entry.value] = [columns.setdefault(t, len(columns)) for t in tids]
            rows.extend([row] * len(found))
            cols.extend(found)
            weights.extend([entry.weight] * len(found))
    queries = sp.csr_matrix(
        (np.asarray(weights, np.float32), (rows, cols)), shape=(len(profiles), len(columns))
    )
    n = len(index.papers)
    documents = np.zeros((len(columns), n), np.float32)
    terms = {tid: term for term, tid in index.term_ids.items()}
    for tid, column in columns.items():
        units = table.unit[table.bounds[tid] : table.bounds[tid + 1]]
        tf = np.bincount(units // table.n_fields, weights=table.norm[units], minlength=n)
        documents[column] = index.idf(terms[tid]) * tf / (tf + K1)
    positions = [
        np.array(sorted(index.position[i] for i in ids & index.ids), np.int64) for ids in sent
    ]
    return FloorInputs(queries, documents, positions, [p.id for p in index.papers])


def floor_rank(
    inputs: FloorInputs, top_k: int, block_size: int = 2048
) -> list[list[tuple[str, float]]]:
    """Per profile, its top_k (paper id, score), best first: a product, argpartition, a sort."""
    ids, out = inputs.ids, []
    n_profiles, n_papers = inputs.queries.shape[0], inputs.documents.shape[1]
    k = min(top_k, n_papers)
    for start in range(0, n_profiles, block_size):
        stop = min(start + block_size, n_profiles)
        scores = inputs.queries[start:stop] @ inputs.documents
        sent = inputs.sent[start:stop]
        scores[np.repeat(np.arange(stop - start), [len(s) for s in sent]), np.concatenate(sent)] = 0
        picked = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(scores, picked, axis=1)
        order = np.argsort(-values, axis=1, kind="stable")
        picked = np.take_along_axis(picked, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        for papers, found in zip(picked.tolist(), values.tolist(), strict=True):
            out.append([(ids[p], v) for p, v in zip(papers, found, strict=True) if v > 0])
    return out


def run_floor(
    index: PaperIndex, profiles: Sequence[Profile], sent: Sequence[frozenset[str]]
) -> list[list[tuple[str, float]]]:
    """The floor's whole work from the same start as rank_many's: the parsed profiles and the
    built index to each profile's top 10."""
    return floor_rank(floor_inputs(index, profiles, sent), TOP_K)


# The naive baseline ------------------------------------------------------------------------


class _Analyzed(NamedTuple):
    """What a naive scorer needs of an entry, worked out once."""

    phrase: tuple[str, ...] = ()
    exact: str = ""
    words: tuple[str, ...] = ()
    idf: tuple[float, ...] = ()
    name: tuple[str, ...] = ()


class NaiveRanker:
    """One profile, one paper, one entry at a time: what a first implementation would do, at
    its best (each entry analyzed once, each paper's word forms counted once)."""

    def __init__(self, index: PaperIndex) -> None:
        self.index = index
        self._entries: dict[Entry, _Analyzed] = {}
        self._forms = {
            (name, d): Counter(EXACT + inflection(w.folded) for w in split_words(text))
            for name in index.fields
            for d, paper in enumerate(index.papers)
            for text in [_field_text(paper, name)]
        }

    def rank(
        self, profile: Profile, top_k: int, min_score: float, sent: frozenset[str]
    ) -> list[tuple[str, float]]:
        """The profile's best top_k (paper id, score), best first, ties to the earlier paper."""
        index = self.index
        selecting = [e for e in profile.positives if e.kind != "cat"]
        categories = [e for e in profile.positives if e.kind == "cat"]
        if not selecting:
            selecting, categories = categories, []
        total = sum(e.weight for e in selecting)
        scored = []
        for d, paper in enumerate(index.papers):
            if paper.id in sent or any(self.worth(e, d) > 0 for e in profile.exclusions):
                continue
            worth = [self.worth(e, d) for e in selecting]
            if not any(worth):
                continue
            relevance = sum(e.weight * w for e, w in zip(selecting, worth, strict=True)) / total
            steer = 1.0
            if categories and not any(self.worth(e, d) > 0 for e in categories):
                steer = 1 - CATEGORY_SHARE
            score = 100 * relevance * steer * float(index.prior[d])
            if score >= max(min_score, 1e-6):
                scored.append((score, d))
        scored.sort(key=lambda x: (-x[0], x[1]))
        return [(index.papers[d].id, s) for s, d in scored[:top_k]]

    def worth(self, entry: Entry, d: int) -> float:
        """What an entry's match in paper d is worth: coverage floor + BM25F saturation."""
        paper, known = self.index.papers[d], self._analyzed(entry)
        if entry.kind == "author":
            return float(any(names_match(known.name, name_words(a)) for a in paper.authors))
        if entry.kind == "cat":
            wanted = entry.terms[0]
            return float(
                any(
                    c.lower() == wanted or c.lower().startswith(wanted + ".")
                    for c in paper.categories
                )
            )
        strength = self._phrase(known.phrase, d)
        if known.exact:
            strength = (1 - EXACT_SHARE) * strength + EXACT_SHARE * self._exact(known.exact, d)
        floor = COVERAGE_FLOOR if strength > 0 else 0.0
        if known.words:
            each = [self._phrase((w,), d) for w in known.words]
            idf_total = max(sum(known.idf), 1e-9)
            loose = sum(i * s for i, s in zip(known.idf, each, strict=True)) / idf_total
            if len(known.phrase) > 1:  # an entry of several terms matches in part
                cover = sum(i for i, s in zip(known.idf, each, strict=True) if s) / idf_total
            else:
                cover = float(all(each))
            had = sum(1 for s in each if s)
            enough = cover >= PARTIAL_COVER and had >= PARTIAL_WORDS
            loose = loose if all(each) or enough else 0.0
            if loose:
                floor = floor or LOOSE_SHARE * COVERAGE_FLOOR * cover
            strength = (1 - LOOSE_SHARE) * strength + LOOSE_SHARE * loose
        return floor + (1 - COVERAGE_FLOOR) * strength if strength > 0 else 0.0

    def _analyzed(self, entry: Entry) -> _Analyzed:
        found = self._entries.get(entry)
        if found is None:
            found = self._entries[entry] = self._analyze(entry)
        return found

    def _analyze(self, entry: Entry) -> _Analyzed:
        analyzer = self.index.analyzer
        if entry.kind == "author":
            return _Analyzed(name=entry.terms)
        if entry.kind == "cat":
            return _Analyzed()
        phrase = analyzer.query_terms(entry.value)
        exact = entry.exact if len(phrase) == 1 and not phrase[0].startswith("\u00a7") else ""
        words: tuple[str, ...] = ()
        if entry.mode == "loose" and not entry.exclude:
            words = analyzer.bag_terms(entry.value)
        idf = tuple(self.index.idf(w) for w in words)
        return _Analyzed(phrase, exact, words, idf)

    def _phrase(self, phrase: tuple[str, ...], d: int) -> float:
        tf = 0.0
        for field_ in self.index.fields.values():
            tokens = field_.tokens[d]
            count = (
                len(tokens.get(phrase[0], ()))
                if len(phrase) == 1
                else len(phrase_spans(tokens, phrase))
            )
            tf += float(field_.norm[d]) * count
        return tf / (tf + K1)

    def _exact(self, form: str, d: int) -> float:
        tf = 0.0
        for name, field_ in self.index.fields.items():
            tf += float(field_.norm[d]) * self._forms[(name, d)].get(form, 0)
        return tf / (tf + K1)


def _field_text(paper: Paper, name: str) -> str:
    if name == "keywords":
        return "; ".join(paper.keywords)
    return paper.title if name == "title" else paper.abstract


# Measuring ---------------------------------------------------------------------------------


class Best:
    """The best (lowest) wall and CPU seconds of a step over the tries of a run."""

    def __init__(self, wall: float = float("inf"), cpu: float = float("inf")) -> None:
        self.wall, self.cpu = wall, cpu

    def time(self, step: Callable[[], T], *, paused_gc: bool = False) -> T:
        """Run a step, keep its time if best so far, return what it returned."""
        gc.collect()
        if paused_gc:  # as rank_many pauses it: the floor gets the same treatment
            gc.disable()
        try:
            start, cpu = time.perf_counter(), time.process_time()
            out = step()
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
        finally:
            gc.enable()
        self.wall, self.cpu = min(self.wall, wall), min(self.cpu, cpu)
        return out

    def __add__(self, other: Best) -> Best:
        return Best(self.wall + other.wall, self.cpu + other.cpu)

    def __str__(self) -> str:
        return f"{self.wall:7.2f} ({self.cpu:.2f})"


def within(total: Best, seconds: float) -> bool:
    """Whether a step kept to its time both by the clock and in CPU: a run longer than the
    target by the clock misses it, however little CPU it took."""
    return max(total.wall, total.cpu) <= seconds


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Targets:
    """The run's targets: each printed with its verdict; any miss makes the exit status 1."""

    def __init__(self) -> None:
        self.missed: list[str] = []

    def check(self, name: str, ok: bool) -> str:
        """'ok' or 'MISSED', remembering a miss."""
        if not ok:
            self.missed.append(name)
        return "ok" if ok else "MISSED"


def read_excerpts(results: list[list[Match]]) -> int:
    """Build every match's excerpt, as the planner does when it stores a digest's items (the
    first read builds all the excerpts of the ranking call)."""
    return sum(len(m.snippet_html) > 0 for matches in results for m in matches)


# Modes: one function each, all on the same papers and profiles ------------------------------


def keywords_mode(args: argparse.Namespace, work: Workload, targets: Targets) -> None:
    """Keyword profiles only: rank_many against the floor and the naive loop."""
    n_profiles = len(work.profiles)
    build, rank, excerpts, floored = Best(), Best(), Best(), Best()
    first: list[list[Match]] = []
    rank_peak = peak = 0.0
    for attempt in range(args.repeat):
        index = build.time(partial(PaperIndex, work.papers, now=NOW))
        rank_all = partial(
            index.rank_many, work.profiles, top_k=TOP_K, min_score=MIN_SCORE, exclude_ids=work.sent
        )
        results = rank.time(rank_all)
        rank_peak = rank_peak or peak_rss_mib()
        built = excerpts.time(partial(read_excerpts, results))
        peak = peak or peak_rss_mib()
        if attempt == 0:
            first = results
            # Shared excerpts are one string, built once: the same object for each match.
            distinct = {id(m.snippet_html) for r in results for m in r}
        del results, rank_all  # the next try starts from a clean heap
        floor_results = floored.time(
            partial(run_floor, index, work.profiles, work.sent), paused_gc=True
        )

    matches = sum(len(r) for r in first)
    print(f"build index        {build}")
    print(
        f"rank_many          {rank}  {matches:,} matches, "
        f"{sum(1 for r in first if not r):,} profiles with none"
    )
    print(f"excerpts           {excerpts}  {len(distinct):,} distinct, for {built:,} matches")
    total = build + rank + excerpts
    timed = not args.quick
    verdict = targets.check("seconds", not timed or within(total, args.seconds))
    print(f"index+rank+excerpt {total}  target <= {args.seconds:g} s wall and CPU: {verdict}")
    print(
        f"floor              {floored}  one sparse product + top-k, "
        f"{sum(len(r) for r in floor_results):,} results"
    )
    ratio = rank.cpu / floored.cpu
    verdict = targets.check("floor", not timed or ratio <= args.floor_ratio)
    print(
        f"rank_many / floor  {ratio:7.2f}x CPU ({rank.wall / floored.wall:.2f}x wall)  "
        f"target <= {args.floor_ratio:g}x: {verdict}"
    )
    print(
        f"peak RSS           {rank_peak:7.0f} MiB after rank_many, {peak:.0f} MiB with every "
        f"excerpt; target <= {RSS_MIB:.0f}: {targets.check('memory', peak <= RSS_MIB)}"
    )
    _check(first, work.sent)

    n_naive = min(args.naive or (100 if args.quick else 1000), n_profiles)
    naive = Best()
    ranker = NaiveRanker(index)
    slow = naive.time(
        lambda: [
            ranker.rank(p, TOP_K, MIN_SCORE, s)
            for p, s in zip(work.profiles[:n_naive], work.sent[:n_naive], strict=True)
        ]
    )
    projected = naive.cpu * n_profiles / n_naive
    print(
        f"naive loop         {naive}  for {n_naive:,} profiles -> {projected:,.0f} s CPU "
        f"projected; rank_many is {projected / rank.cpu:,.0f}x faster"
    )
    same = _agreement(slow, first[:n_naive])
    verdict = targets.check("naive", same == 1.0)
    print(f"same top 10        {same:7.1%} of {n_naive:,} profiles, in order: {verdict}")
    compare_saved(args, first, targets)


def compare_saved(args: argparse.Namespace, results: list[list[Match]], targets: Targets) -> None:
    """--record: save every profile's top 10; --against: the same top 10 as a saved run."""
    top = [[[m.paper_id, m.score] for m in matches] for matches in results]
    if args.record:
        with gzip.open(args.record, "wt", encoding="utf-8") as out:
            json.dump({"papers": args.papers, "profiles": args.profiles, "top": top}, out)
        print(f"recorded           every top {TOP_K} in {args.record}")
    if args.against:
        with gzip.open(args.against, "rt", encoding="utf-8") as saved:
            theirs = json.load(saved)["top"]
        if len(theirs) != len(top):
            sys.exit(f"{args.against} ranked {len(theirs):,} profiles, this run {len(top):,}")
        ids = sum([i for i, _ in a] == [i for i, _ in b] for a, b in zip(top, theirs, strict=True))
        scores = sum(a == b for a, b in zip(top, theirs, strict=True))
        verdict = targets.check("against", ids == len(top))
        print(
            f"against saved run  {ids / len(top):7.2%} same top {TOP_K} in order "
            f"({scores / len(top):.2%} same scores too): {verdict}"
        )


MODES: dict[str, Callable[[argparse.Namespace, Workload, Targets], None]] = {
    "keywords": keywords_mode,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200 papers x 2,000 profiles")
    parser.add_argument("--papers", type=int)
    parser.add_argument("--profiles", type=int)
    parser.add_argument("--naive", type=int, help="profiles for the naive baseline")
    parser.add_argument("--repeat", type=int, default=3, help="tries; the best of each counts")
    parser.add_argument("--mode", choices=sorted(MODES), action="append", help="default: all")
    parser.add_argument("--record", type=Path, help="save every top 10 (.json.gz)")
    parser.add_argument("--against", type=Path, help="compare with a saved run")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=SECONDS, help="index+rank+excerpts")
    parser.add_argument("--floor-ratio", type=float, default=FLOOR_RATIO, help="rank_many/floor")
    args = parser.parse_args(argv)
    args.papers = args.papers or (200 if args.quick else 1000)
    args.profiles = args.profiles or (2000 if args.quick else 100_000)
    work = make_workload(args.papers, args.profiles, args.seed)
    base_rss = rss_mib()
    parse = Best()
    work.profiles = parse.time(lambda: [parse_profile(t) for t in work.texts])
    print(
        f"{args.papers:,} papers, {args.profiles:,} profiles ({len(set(work.texts)):,} distinct "
        f"texts, {len(set(work.profiles)):,} distinct profiles); {base_rss:.0f} MiB before"
    )
    print(
        f"best of {args.repeat} tries, wall (CPU) seconds; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )
    print(f"parse profiles     {parse}")
    targets = Targets()
    for mode in args.mode or list(MODES):
        print(f"-- {mode}")
        MODES[mode](args, work, targets)
    if targets.missed:
        print(f"targets missed: {', '.join(targets.missed)}")
    return 1 if targets.missed else 0


def _agreement(
    naive: Sequence[Sequence[tuple[str, float]]], fast: Sequence[Sequence[Match]]
) -> float:
    """The share of profiles whose top 10 is the same papers in the same order in both."""
    same = sum(
        [pid for pid, _ in slow] == [m.paper_id for m in quick]
        for slow, quick in zip(naive, fast, strict=True)
    )
    return same / len(naive) if naive else 1.0


# Ranking with ratings ----------------------------------------------------------------------


def ratings_mode(args: argparse.Namespace, work: Workload, targets: Targets) -> None:
    """Ratings and likes beside keywords (see the module docstring), against keywords only."""
    from newsletter.ranker import PaperWindow, RankingPolicy, feedbacks_of

    rng = random.Random(args.seed + 1)
    profiles, sent = work.profiles, work.sent
    older = [replace(p, id=f"2605.{i:05d}") for i, p in enumerate(synthesize_papers(5000, rng))]
    texts = {p.id: p for p in older}
    pool = list(texts)
    ratings: list[dict[str, int]] = []
    likes: list[tuple[str, ...]] = []
    for _ in profiles:
        rated = rng.sample(pool, 20) if rng.random() < 0.3 else []
        ratings.append({pid: 1 if i % 2 else -1 for i, pid in enumerate(rated)})
        likes.append(tuple(rng.sample(pool, 10)) if rng.random() < 0.1 else ())
    policy = RankingPolicy(
        min_score=MIN_SCORE, popularity_weight=0.05, digest_size=TOP_K, window_days=2
    )
    keywords, rated = Best(), Best()
    with_ratings = sum(1 for r, lk in zip(ratings, likes, strict=True) if r or lk)
    # The liked papers are profile likes (like: entries), as parsing the profiles gives them.
    liking = [replace(p, likes=lk) if lk else p for p, lk in zip(profiles, likes, strict=True)]
    excluded = [s | set(r) | set(lk) for s, r, lk in zip(sent, ratings, likes, strict=True)]

    def rank_plain() -> list[list[Match]]:
        return window.rank(profiles, top_k=[TOP_K] * len(profiles), exclude_ids=sent)

    def rank_rated() -> list[list[Match]]:
        feedback = feedbacks_of(liking, ratings, texts)
        return window.rank(
            liking, top_k=[TOP_K] * len(profiles), exclude_ids=excluded, feedback=feedback
        )

    # The two in turn, each on a fresh index (nothing of the other cached), the best of each:
    # a slow minute of a shared machine then moves both, not one.
    results: list[list[Match]] = []
    for _ in range(max(args.repeat, 1)):
        del results[:]  # what one try made is gone before the next starts
        window = PaperWindow.of(policy, work.papers, NOW)
        keywords.time(rank_plain)
        window = PaperWindow.of(policy, work.papers, NOW)
        gc.collect()
        results = rated.time(rank_rated)
    peak = peak_rss_mib()
    _check(results, excluded)
    said = sum(1 for r in results for m in r if m.liked is not None)
    ratio = rated.cpu / keywords.cpu
    print(f"keywords only      {keywords}  PaperWindow.rank, the planner's path")
    print(
        f"with ratings       {rated}  {with_ratings:,} subscribers rated or liked papers; "
        f"{said:,} matches say which liked paper they are like"
    )
    verdict = targets.check("ratings", args.quick or ratio <= 2.0)
    print(f"ratings / keywords {ratio:7.2f}x CPU  target <= 2: {verdict}")
    verdict = targets.check("ratings memory", peak <= 1536)
    print(f"peak RSS           {peak:7.0f} MiB with ratings; target <= 1536: {verdict}")


MODES["ratings"] = ratings_mode


def _check(results: list[list[Match]], sent: Sequence[frozenset[str]]) -> None:
    for matches, already in zip(results, sent, strict=True):
        assert len(matches) <= TOP_K
        assert not any(m.paper_id in already for m in matches)
        assert all(0 <= m.score <= 100 for m in matches)
        assert all(a.score >= b.score for a, b in zip(matches, matches[1:], strict=False))


if __name__ == "__main__":
    sys.exit(main())
