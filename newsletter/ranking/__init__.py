"""Pure scoring of papers against keyword profiles: BM25F, phrases, explanations, top-k.

* `index`: the papers of an edition analyzed once (`PaperIndex`), and ranking through it;
* `scoring`: how a paper scores for a profile, 0 to 100 (read its docstring), and the
  block-wise product that scores many profiles at once;
* `explain`: what a chosen paper's `Match` says: the entries that matched, where, the excerpt.

Ranking many profiles (`PaperIndex.rank_many`): equal profiles are scored once; scores of a
block of profiles are one sparse (profiles x entries) by dense (entries x papers) product;
explanations are worked out in numpy for all the chosen papers at once (one per distinct
pattern of matched entries and fields), and excerpts, all of a call's together, when the
first of them is read.

Everything here is a function of its arguments (papers, profiles, `now`): no I/O, no state
beyond the index being built, so the web preview, the CLI and the workers rank identically.
"""

from newsletter.ranking.explain import (
    SNIPPET_WORDS,
    Match,
    format_rank_json,
    marked_parts,
    snippet_text,
)
from newsletter.ranking.index import FEATURE_CACHE, PaperIndex, rank_papers
from newsletter.ranking.scoring import (
    ABSTRACT,
    AUTHORS,
    CATEGORIES,
    CATEGORY_SHARE,
    COVERAGE_FLOOR,
    DENSE_LIMIT,
    EXACT_SHARE,
    FIELD_B,
    FIELD_BIT,
    FIELD_WEIGHT,
    FIELDS,
    K1,
    KEYWORDS,
    LOOSE_SHARE,
    PARTIAL_COVER,
    PARTIAL_WORDS,
    RECENCY_DAYS,
    RECENCY_WEIGHT,
    TITLE,
)

__all__ = [
    "ABSTRACT",
    "AUTHORS",
    "CATEGORIES",
    "CATEGORY_SHARE",
    "COVERAGE_FLOOR",
    "DENSE_LIMIT",
    "EXACT_SHARE",
    "FEATURE_CACHE",
    "FIELDS",
    "FIELD_B",
    "FIELD_BIT",
    "FIELD_WEIGHT",
    "K1",
    "KEYWORDS",
    "LOOSE_SHARE",
    "PARTIAL_COVER",
    "PARTIAL_WORDS",
    "RECENCY_DAYS",
    "RECENCY_WEIGHT",
    "SNIPPET_WORDS",
    "TITLE",
    "Match",
    "PaperIndex",
    "format_rank_json",
    "marked_parts",
    "rank_papers",
    "snippet_text",
]
