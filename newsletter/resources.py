"""The files the package ships beside its code (templates, static files, the demo day, the
migrations), found where the package is installed, and the check that they are all there.

They are package data, inside `newsletter/`, so a checkout, an editable install, a wheel and
the Docker image all find them the same way: next to this module.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE / "templates"
WEB_TEMPLATES = TEMPLATES_DIR / "web"
STATIC_DIR = WEB_TEMPLATES / "static"
DEMO_DATA = PACKAGE / "data" / "hf_daily_papers_2026-06-12.json"

# Every file the service reads at run time, relative to the package. A unit test keeps this
# list equal to what the package holds, so a new template cannot be forgotten here.
EMAIL_TEMPLATES = tuple(
    f"templates/email/{name}"
    for name in (
        "base.html",
        "base.txt",
        "styles.css",
        "confirm/body.html",
        "confirm/body.txt",
        "confirm/subject.txt",
        "digest/body.html",
        "digest/body.txt",
        "digest/card.html",
        "digest/card.txt",
        "digest/labels.html",
        "digest/more.html",
        "digest/rate.html",
        "digest/subject.txt",
        "digest/trending.html",
        "digest/trending.txt",
        "digest/trending_card.html",
        "digest/trending_card.txt",
        "digest/view_link.html",
    )
)
WEB_FILES = tuple(
    f"templates/web/{name}"
    for name in (
        "_frequency.html",
        "_likes.html",
        "_likes_report.html",
        "_macros.html",
        "_ratings.html",
        "_results.html",
        "base.html",
        "check_inbox.html",
        "confirm.html",
        "error.html",
        "manage.html",
        "preview.html",
        "rate.html",
        "signup.html",
        "subscribed.html",
        "unsubscribe.html",
        "unsubscribed.html",
        "admin/_layout.html",
        "admin/editions.html",
        "admin/login.html",
        "admin/overview.html",
        "admin/sources.html",
        "admin/subscriber.html",
        "admin/subscribers.html",
        "static/admin.css",
        "static/app.js",
        "static/style.css",
    )
)
OTHER_FILES = (
    "data/hf_daily_papers_2026-06-12.json",
    "migrations/env.py",
    "migrations/script.py.mako",
)
SHIPPED = EMAIL_TEMPLATES + WEB_FILES + OTHER_FILES


class IncompleteInstall(Exception):
    """Files the service needs are missing from the installed package."""

    def __init__(self, missing: list[str]) -> None:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        shown = ", ".join(missing[:5]) + more
        super().__init__(
            f"this installation of the package is incomplete: {shown} missing under {PACKAGE} "
            "(reinstall it: pip install paper-newsletter, or pip install -e . in a checkout)"
        )
        self.missing = missing


def missing_files(package: Path = PACKAGE) -> list[str]:
    """The shipped files (relative to the package) that are not there, in SHIPPED's order."""
    return [name for name in SHIPPED if not (package / name).is_file()]


def check_installed() -> None:
    """Raise IncompleteInstall unless every shipped file is in place (call before any write)."""
    missing = missing_files()
    if missing:
        raise IncompleteInstall(missing)
