"""Reference-manager exports read for their arXiv papers: BibTeX, RIS and Zotero CSV as real
tools write them, every other entry named by its title and why, broken files refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.likes.exports import (
    MAX_PAPERS,
    ExportError,
    Skipped,
    read_bibtex,
    read_export,
    read_ris,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "likes"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_a_bibtex_library_gives_its_arxiv_papers_and_names_the_others():
    export = read_export(fixture("library.bib"), "library.bib")
    assert export.format == "BibTeX" and export.entries == 7  # @string, @comment are no entries
    # eprint+archivePrefix; Google Scholar's journal; DBLP's CoRR volume; DataCite's DOI.
    assert export.ids == ["2606.13677", "2606.13591", "2606.13568", "2606.13515"]
    assert export.skipped == [
        Skipped(
            "Protein structure prediction with nested braces, and a comma",
            "not an arXiv paper (DOI 10.1038/s41586-021-03819-2)",
        ),
        Skipped(r"The \TeXbook", "no arXiv id, arXiv address or arXiv DOI in it"),
        Skipped("A paper whose eprint is elsewhere", "its eprint is on PubMed, not arXiv"),
    ]


@pytest.mark.parametrize(
    ("entry", "paper"),
    [
        # A quoted value holding braces and a quote inside them; # concatenation.
        ('@article{a, title = "Caf{\\"e} {"}quoted{"}", eprint = "2401.00001v3"}', "2401.00001"),
        ("@misc{b, note = {see arXiv:2401.00002 [cs.LG]}}", "2401.00002"),
        ("@misc(c, url = {https://arxiv.org/pdf/2401.00003v2.pdf})", "2401.00003"),  # parens
        ("@article{d, arxivId = {2401.00004}}", "2401.00004"),  # Mendeley
        ("@article{e, eprint = {9901001}, primaryClass = {hep-th}}", "hep-th/9901001"),
        ("@article{f, eprint = {math.AG/0601001}, archiveprefix = {arXiv}}", "math.AG/0601001"),
        ("@string{ax = {arXiv:2401.00006}}\n@misc{g, howpublished = ax}", "2401.00006"),
        (
            "@misc{h,\n % a commented-out field = {x},\n doi = {10.48550/arXiv.2401.00008}}",
            "2401.00008",
        ),
        (
            '@misc{i, title = {A} # " b", url = "http://export.arxiv.org/abs/2401.00009"}',
            "2401.00009",
        ),
        ("@misc{j, url = {https://example.org/a%20b}, journal = {arXiv 2401.00010}}", "2401.00010"),
    ],
)
def test_tricky_bibtex(entry, paper):
    assert read_bibtex(entry).ids == [paper]


def test_text_between_entries_is_a_comment_even_with_an_at_sign():
    text = "Mail me at reader@example.org.\n% @article is not here\n@misc{k, eprint={2401.00011}}"
    export = read_bibtex(text)
    assert export.ids == ["2401.00011"] and export.entries == 1


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("@article{a, title = {never closed, eprint = {2401.00001}}\n", "line 1"),
        ('\n\n@article{a, title = "never closed}', "line 3"),
        ("@article{a, title {no equals sign}}", "line 1"),
        ("@article{a, eprint = {2401.00001}}\n@misc{b, title = {x}", "line 2"),
    ],
)
def test_a_broken_bibtex_file_is_refused_whole_and_says_where(text, where):
    with pytest.raises(ExportError, match=where):
        read_export(text.encode(), "x.bib")


def test_a_ris_library_with_values_over_several_lines():
    export = read_export(fixture("library.ris"), "library.ris")
    assert export.format == "RIS" and export.entries == 3
    assert export.ids == ["2606.13501", "2606.13677"]
    assert export.skipped == [
        Skipped(
            "Highly accurate protein structure prediction with AlphaFold",  # two lines, joined
            "not an arXiv paper (DOI 10.1038/s41586-021-03819-2)",
        )
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("TY  - JOUR\nTI  - no end\n", "line 1: this record never ends"),
        ("TI  - outside\nER  - \n", "line 1: TI outside a record"),
        ("TY  - JOUR\nTY  - JOUR\nER  - \n", "line 2: a record opens before"),
    ],
)
def test_a_broken_ris_file_is_refused(text, message):
    with pytest.raises(ExportError, match=message):
        read_ris(text)


def test_a_zotero_csv_reads_its_url_doi_and_extra_columns():
    export = read_export(fixture("zotero.csv"), "My Library.csv")
    assert export.format == "CSV" and export.entries == 5
    # DOI/Url of a preprint; "Extra: arXiv: ID" alone; a Url with a version.
    assert export.ids == ["2606.13677", "2606.13568", "2401.99999"]
    assert [s.title for s in export.skipped] == [
        "Highly accurate protein structure prediction with AlphaFold",
        "A blog post with no identifiers",
    ]


def test_a_csv_row_with_missing_values_is_reported_and_the_others_kept():
    text = 'Title,Url\n"A","https://arxiv.org/abs/2401.00001"\n"short row"\n'
    export = read_export(text.encode(), "x.csv")
    assert export.ids == ["2401.00001"]
    assert export.skipped == [Skipped("the row on line 3", "1 values, the header has 2")]


@pytest.mark.parametrize(
    ("data", "name", "message"),
    [
        (b"%PDF-1.7\x00\x01binary", "paper.pdf", "not a text file"),
        (b"just some notes\nnothing here", "notes.txt", "not a BibTeX, RIS or CSV export"),
        (b"Name,Email\nAda,ada@example.org\n", "people.csv", "needs a Title column"),
        (b'Title,Url\n"unclosed,x\n', "x.csv", "not valid CSV"),
        (b"% only a comment\n", "empty.bib", "holds no entries"),
    ],
)
def test_what_cannot_be_read_is_refused_with_a_reason(data, name, message):
    with pytest.raises(ExportError, match=message):
        read_export(data, name)


def test_more_papers_than_a_profile_may_like_are_refused():
    entries = "\n".join(f"@misc{{p{n}, eprint={{2401.{n:05d}}}}}" for n in range(MAX_PAPERS + 1))
    with pytest.raises(ExportError, match=f"{MAX_PAPERS + 1} arXiv papers; at most {MAX_PAPERS}"):
        read_export(entries.encode(), "big.bib")
    assert len(read_export(entries.rsplit("\n", 1)[0].encode(), "ok.bib").ids) == MAX_PAPERS


def test_a_paper_listed_twice_is_liked_once():
    text = "@misc{a, eprint={2401.00001v1}}\n@misc{b, url={https://arxiv.org/abs/2401.00001v2}}"
    export = read_bibtex(text)
    assert export.ids == ["2401.00001"] and export.entries == 2


def test_large_exports_read_in_linear_time():
    """No format reads in quadratic time: a RIS abstract of 60,000 lines, a BibTeX of 3,000
    long entries (2 MB each; about 9 s and 3 s when they were quadratic, 0.1 s now)."""
    import time

    ris = "TY  - JOUR\nTI  - t\nAB  - a\n" + "an abstract line that goes on\n" * 60_000 + "ER  - \n"
    long = "word " * 100
    bib = "".join(
        f"@article{{k{n}, title={{A {{nested}} title {n}}}, abstract={{{long}}}}}\n"
        for n in range(3000)
    )
    for name, text in (("a.ris", ris), ("a.bib", bib)):
        started = time.perf_counter()
        read_export(text.encode(), name)
        assert time.perf_counter() - started < 1.0, name
