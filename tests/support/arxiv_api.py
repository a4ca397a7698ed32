"""A local arXiv API: id_list queries answered from recorded Atom entries, with faults on cue.

arXiv's answer to `id_list=A,B,C` is a feed of the entries it has, in the serialisation of
tests/fixtures/sources/arxiv_atom_query.xml (recorded), leaving out the ids it has no paper
for. No id_list response is recorded, so the feed is built here from the recorded entries
under the recorded feed's head (see tests/fixtures/likes/PROVENANCE.md).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from lxml import etree

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RECORDED = (
    FIXTURES / "sources" / "arxiv_atom_query.xml",
    FIXTURES / "sources" / "arxiv_atom_query_legacy_2016.xml",
)
ERROR_400 = FIXTURES / "sources" / "arxiv_atom_error_400.golden.json"
ATOM = "{http://www.w3.org/2005/Atom}"
OPENSEARCH = "{http://a9.com/-/spec/opensearch/1.1/}"
PATH = "/api/query"


def recorded_entries() -> dict[str, etree._Element]:
    """Each recorded entry by its versionless id (2606.13677, cond-mat/0603029)."""
    entries: dict[str, etree._Element] = {}
    for path in RECORDED:
        root = etree.fromstring(path.read_bytes())
        for entry in root.iterfind(f"{ATOM}entry"):
            raw = entry.findtext(f"{ATOM}id").partition("/abs/")[2]
            entries[raw.rsplit("v", 1)[0]] = entry
    return entries


def id_list_feed(ids: Sequence[str]) -> bytes:
    """arXiv's answer to id_list=`ids`: the recorded entries it has, none for the others."""
    known = recorded_entries()
    root = etree.fromstring(RECORDED[0].read_bytes())
    for entry in root.findall(f"{ATOM}entry"):
        root.remove(entry)
    title = root.find(f"{ATOM}title")
    title.text = (
        f"arXiv Query: search_query=&id_list={','.join(ids)}&start=0&max_results={len(ids)}"
    )
    found = [known[paper] for paper in ids if paper in known]
    root.find(f"{OPENSEARCH}totalResults").text = str(len(found))
    root.find(f"{OPENSEARCH}itemsPerPage").text = str(len(ids))
    for entry in found:
        root.append(entry)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def bad_id_feed(paper_id: str) -> bytes:
    """The recorded 400 answer to a malformed id, naming `paper_id` instead of "abc"."""
    import json

    body = json.loads(ERROR_400.read_text())["body"]
    return body.replace("abc", paper_id).encode()


@dataclass
class Fault:
    """One scripted misbehaviour for the next request."""

    kind: str  # "500", "timeout", "malformed", "empty_page", "bad_id"
    seconds: float = 0.0  # how long "timeout" waits before answering
    paper_id: str = ""  # the id a "bad_id" answer names


class ArxivAPI:
    """The server: `faults` are used one per request, then id_list answers as arXiv would."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: list[list[str]] = []
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{PATH}"

    def _next(self, ids: list[str]) -> Fault | None:
        with self._lock:
            self.requests.append(ids)
            return self.faults.pop(0) if self.faults else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                ids = [i for i in query.get("id_list", [""])[0].split(",") if i]
                if parts.path != PATH or not ids:
                    self._reply(404, b"not here")
                    return
                fault = server._next(ids)
                if fault is None:
                    self._reply(200, id_list_feed(ids))
                elif fault.kind == "500":
                    self._reply(500, b"<html>Internal Server Error</html>", "text/html")
                elif fault.kind == "timeout":
                    time.sleep(fault.seconds)
                    self._reply(200, id_list_feed(ids))
                elif fault.kind == "malformed":
                    self._reply(200, id_list_feed(ids)[:700])
                elif fault.kind == "empty_page":
                    feed = id_list_feed([])
                    self._reply(
                        200,
                        feed.replace(
                            b">0</opensearch:totalResults", b">3</opensearch:totalResults"
                        ),
                    )
                elif fault.kind == "bad_id":
                    self._reply(400, bad_id_feed(fault.paper_id))

            def _reply(self, status: int, body: bytes, kind: str = "application/atom+xml") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler

    @contextmanager
    def running(self) -> Iterator[ArxivAPI]:
        thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        try:
            yield self
        finally:
            self.httpd.shutdown()
            self.httpd.server_close()
            thread.join(timeout=5)
