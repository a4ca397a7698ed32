"""Relevance of the ranker on tests/fixtures/relevance: P@10 and nDCG@10 against plain BM25.

Plain BM25 is rank-bm25's BM25Okapi over title + abstract with lowercase alphanumeric tokens.
Gains for nDCG come from the judged order: the i-th of n relevant papers (0-based) gains
(n - i) / n, so the best judged paper gains 1 and every relevant one gains something.

    .venv/bin/python tests/perf/eval_relevance.py [--quick] [--show]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from newsletter.paper import Paper, read_jsonl
from newsletter.profile import parse_profile
from newsletter.ranking import PaperIndex

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "relevance"
K = 10

Ranker = Callable[[str], list[str]]


def load() -> tuple[list[Paper], list[dict[str, object]]]:
    papers = read_jsonl((DATA / "papers.jsonl").read_text(encoding="utf-8"))
    queries = json.loads((DATA / "queries.json").read_text(encoding="utf-8"))
    return papers, queries


def precision(ranked: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    wanted = set(relevant)
    return sum(1 for pid in ranked[:k] if pid in wanted) / k


def ndcg(ranked: Sequence[str], relevant: Sequence[str], k: int = K) -> float:
    gains = {pid: (len(relevant) - i) / len(relevant) for i, pid in enumerate(relevant)}
    dcg = sum(gains.get(pid, 0.0) / math.log2(r + 2) for r, pid in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    best = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / best if best else 0.0


def random_precision(relevant: int, papers: int, k: int = K) -> float:
    """The expected P@k of a random order: the share of relevant papers (k of them drawn)."""
    return min(relevant, papers) / papers if papers else 0.0


def bootstrap_interval(
    ours: Sequence[float], other: Sequence[float], draws: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Paired bootstrap 95% interval of mean(ours - other) over the units (queries, days)."""
    rng = np.random.default_rng(seed)
    diff = np.asarray(ours, dtype=np.float64) - np.asarray(other, dtype=np.float64)
    if not len(diff):
        return 0.0, 0.0
    means = diff[rng.integers(0, len(diff), size=(draws, len(diff)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def tokens(text: str) -> list[str]:
    """Plain BM25's tokens: lowercase alphanumeric runs."""
    return re.findall(r"[a-z0-9]+", text.lower())


def plain_bm25(papers: Sequence[Paper]) -> Ranker:
    bm25 = BM25Okapi([tokens(f"{p.title} {p.abstract}") for p in papers])

    def rank(query: str) -> list[str]:
        scores = bm25.get_scores(tokens(query))
        order = sorted(range(len(papers)), key=lambda i: (-scores[i], i))
        return [papers[i].id for i in order[:K] if scores[i] > 0]

    return rank


def this_ranker(papers: Sequence[Paper]) -> Ranker:
    index = PaperIndex(papers)

    def rank(query: str) -> list[str]:
        return [m.paper_id for m in index.rank(parse_profile(query), top_k=K)]

    return rank


def evaluate(
    name: str, rank: Ranker, queries: Sequence[dict[str, object]], show: bool, n_papers: int
) -> tuple[list[float], list[float]]:
    """Per query: P@10 and nDCG@10 (printed beside the random baseline's P@10)."""
    ps: list[float] = []
    ns: list[float] = []
    width = max((len(repr(str(q["query"]))) for q in queries), default=0)
    for q in queries:
        query, relevant = str(q["query"]), list(q["relevant_in_order"])  # type: ignore[call-overload]
        ranked = rank(query)
        p, n = precision(ranked, relevant), ndcg(ranked, relevant)
        ps.append(p)
        ns.append(n)
        chance = random_precision(len(relevant), n_papers)
        print(
            f"  {name:<12} {query!r:<{width}} P@10 {p:.3f}  nDCG@10 {n:.3f}  "
            f"(random P@10 {chance:.3f}, {len(relevant)} relevant)"
        )
        if show:
            wanted = set(relevant)
            for pid in ranked:
                mark = f"#{relevant.index(pid)}" if pid in wanted else "-"
                print(f"      {mark:>4} {pid}")
    return ps, ns


def random_ndcg(relevant: Sequence[str], n_papers: int, draws: int = 2000) -> float:
    """The mean nDCG@10 of random orders of the papers (a fixed seed)."""
    rng = np.random.default_rng(0)
    ids = list(relevant) + [f"-{i}" for i in range(n_papers - len(relevant))]
    total = 0.0
    for _ in range(draws):
        picked = rng.choice(len(ids), size=min(K, len(ids)), replace=False)
        total += ndcg([ids[i] for i in picked], relevant)
    return total / draws


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the first query")
    parser.add_argument("--show", action="store_true", help="print each ranking")
    args = parser.parse_args(argv)
    papers, queries = load()
    if args.quick:
        queries = queries[:1]
    print(f"{len(papers)} papers, {len(queries)} queries, cut-off {K}")
    n = len(papers)
    ours = evaluate("this ranker", this_ranker(papers), queries, args.show, n)
    plain = evaluate("plain BM25", plain_bm25(papers), queries, args.show, n)
    chance_p = [random_precision(len(q["relevant_in_order"]), n) for q in queries]  # type: ignore[arg-type]
    chance_n = [random_ndcg(list(q["relevant_in_order"]), n) for q in queries]  # type: ignore[call-overload]
    rows = [("this ranker", ours), ("plain BM25", plain), ("random order", (chance_p, chance_n))]
    for name, (p, nd) in rows:
        line = f"mean  {name:<13} P@10 {np.mean(p):.3f}  nDCG@10 {np.mean(nd):.3f}"
        if name != "random order":
            lo, hi = bootstrap_interval(p, chance_p)
            line += f"  vs random P@10 [{lo:+.3f}, {hi:+.3f}]"
        if name != "this ranker":
            lo, hi = bootstrap_interval(ours[0], p)
            nlo, nhi = bootstrap_interval(ours[1], nd)
            line += f"  this ranker vs it P@10 [{lo:+.3f}, {hi:+.3f}] nDCG [{nlo:+.3f}, {nhi:+.3f}]"
        print(line)
    print(f"(paired bootstrap 95% intervals over the {len(queries)} queries)")
    better = np.mean(ours[0]) > np.mean(plain[0]) and np.mean(ours[1]) > np.mean(plain[1])
    print("this ranker beats plain BM25 on both" if better else "plain BM25 is not beaten")
    return 0 if better else 1


if __name__ == "__main__":
    sys.exit(main())
