"""Listings as data: the PEP 691 shape, built once and rendered as HTML and JSON.

Pure functions from values to values; ``storage`` writes what ``render_*`` return.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import escape
from packaging.version import InvalidVersion, Version

from .names import NormalizedName
from .records import FileEntry

API_VERSION = "1.4"  # PEP 700 (1.1), 708 (1.2), 740 (1.3), 792 (1.4)
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"


@functools.lru_cache(maxsize=8192)  # a listing and a page sort the same versions again
def version_key(version: str) -> tuple[int, Version | str]:
    """A sort key for versions: PEP 440 order, the invalid ones first."""
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def merge_files(layers: Iterable[Sequence[FileEntry]]) -> list[FileEntry]:
    """Merge file lists nearest first; the nearest layer wins on the same filename."""
    seen: set[str] = set()
    merged: list[FileEntry] = []
    for layer in layers:
        for entry in sorted(layer, key=lambda e: (version_key(e.version), e.filename)):
            if entry.filename not in seen:
                seen.add(entry.filename)
                merged.append(entry)
    return merged


@dataclass(frozen=True)
class ProjectStatus:
    """PEP 792: one of PROJECT_STATUSES, with an optional reason."""

    status: str = "active"
    reason: str | None = None

    @property
    def offers_files(self) -> bool:
        """A quarantined project offers no files for installation."""
        return self.status != "quarantined"


def build_project_page(
    project: NormalizedName, files: Sequence[FileEntry], tracks: Sequence[str] = (),
    status: ProjectStatus | None = None, alternate_locations: Sequence[str] = (),
) -> dict[str, Any]:
    """The PEP 691 project detail (API 1.4: PEP 700 times, PEP 708 tracks and alternate
    locations, PEP 740 provenance, PEP 792 status), as a dict ready for ``json.dumps``.
    A quarantined project lists no files."""
    meta: dict[str, Any] = {"api-version": API_VERSION}
    if tracks:
        meta["tracks"] = list(tracks)
    if status is not None and not status.offers_files:
        files = []
    versions = sorted({f.version for f in files}, key=version_key)
    page: dict[str, Any] = {
        "meta": meta,
        "name": project,
        "versions": versions,
        "files": [_file_dict(f) for f in files],
    }
    if alternate_locations:
        page["alternate-locations"] = list(alternate_locations)
    if status is not None and (status.status != "active" or status.reason):
        page["project-status"] = {"status": status.status}
        if status.reason:
            page["project-status"]["reason"] = status.reason
    return page


def _file_dict(f: FileEntry) -> dict[str, Any]:
    metadata: dict[str, str] | bool = {"sha256": f.metadata_sha256} if f.metadata_sha256 else False
    d: dict[str, Any] = {
        "filename": f.filename,
        "url": f.url,
        "hashes": {"sha256": f.sha256} if f.sha256 else {},
        "requires-python": f.requires_python,
        "core-metadata": metadata,
        "dist-info-metadata": metadata,
        "yanked": f.yanked,
    }
    if f.size is not None:
        d["size"] = f.size
    if f.upload_time:
        d["upload-time"] = f.upload_time
    d["provenance"] = f.provenance
    return d


def build_root_page(projects: Iterable[str]) -> dict[str, Any]:
    return {
        "meta": {"api-version": API_VERSION},
        "projects": [{"name": p} for p in sorted(set(projects))],
    }


def build_repos_page(repos: Iterable[tuple[str, Sequence[str]]]) -> dict[str, Any]:
    """The page at ``<prefix>/``: each repository, its URL (relative) and its fallback chain."""
    return {
        "meta": {"api-version": API_VERSION},
        "repositories": [{"name": name, "url": f"{name}/", "fallback": list(fallback)}
                         for name, fallback in repos],
    }


# the package's templates (autoescaped HTML), shared with the pages for people
TEMPLATES = _env = jinja2.Environment(
    loader=jinja2.PackageLoader("pypi_fallback", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    undefined=jinja2.StrictUndefined,
    auto_reload=False,  # a template is read once per process (no stat per page rendered)
)


def render_json(page: Mapping[str, Any]) -> bytes:
    return json.dumps(page, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_project_html(page: Mapping[str, Any]) -> bytes:
    """The PEP 503 page of a project detail. Built from strings, every value escaped
    (``markupsafe.escape``, what the templates' autoescaping does): one is written for each
    project at every full regeneration, and a template costs several times more."""
    head = [f'<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
            f'content="{escape(page["meta"]["api-version"])}">\n']
    head += [f'    <meta name="pypi:tracks" content="{escape(track)}">\n'
             for track in page["meta"].get("tracks", ())]
    head += [f'    <meta name="pypi:alternate-locations" content="{escape(location)}">\n'
             for location in page.get("alternate-locations", ())]
    status = page.get("project-status")
    if status:
        head.append(f'    <meta name="pypi:project-status" content="{escape(status["status"])}">\n')
        if status.get("reason"):
            head.append('    <meta name="pypi:project-status-reason" '
                        f'content="{escape(status["reason"])}">\n')
    name = escape(page["name"])
    head.append(f"    <title>Links for {name}</title>\n  </head>\n  <body>\n"
                f"    <h1>Links for {name}</h1>\n")
    return "".join([*head, *map(_file_link, page["files"]),
                    "  </body>\n</html>\n"]).encode("utf-8")


def _file_link(f: Mapping[str, Any]) -> str:
    """One file's line of a project's HTML page (PEP 503, 592, 658, 714, 740)."""
    sha256 = f["hashes"].get("sha256")
    link = [f'    <a href="{escape(f["url"])}' + (f'#sha256={escape(sha256)}"' if sha256 else '"')]
    if f["requires-python"]:
        link.append(f' data-requires-python="{escape(f["requires-python"])}"')
    if f["core-metadata"]:
        metadata = escape(f["core-metadata"]["sha256"])
        link.append(f' data-core-metadata="sha256={metadata}" '
                    f'data-dist-info-metadata="sha256={metadata}"')
    if f["provenance"]:
        link.append(f' data-provenance="{escape(f["provenance"])}"')
    yanked = f["yanked"]
    if isinstance(yanked, str):
        link.append(f' data-yanked="{escape(yanked)}"')
    elif yanked:
        link.append(' data-yanked=""')
    link.append(f'>{escape(f["filename"])}</a><br>\n')
    return "".join(link)


def render_root_html(page: Mapping[str, Any]) -> bytes:
    # A root listing can hold 100,000 names: join escaped lines instead of a template loop.
    names = (escape(p["name"]) for p in page["projects"])
    links = "".join(f'    <a href="{n}/">{n}</a><br>\n' for n in names)
    head = _env.get_template("root.html").render(api_version=page["meta"]["api-version"])
    return head.replace("<!-- links -->\n", links).encode("utf-8")


def render_repos_html(page: Mapping[str, Any]) -> bytes:
    return _env.get_template("repos.html").render(page=page).encode("utf-8")


# PEP 691's "latest" types are aliases of v1 (the answer names the version, v1).
TYPE_MAP = (
    "URI: index.html\nContent-Type: text/html; qs=1.0\n\n"
    f"URI: index.html\nContent-Type: {HTML_TYPE}; qs=0.99\n\n"
    "URI: index.html\nContent-Type: application/vnd.pypi.simple.latest+html; qs=0.99\n\n"
    f"URI: index.v1_json\nContent-Type: {JSON_TYPE}; qs=0.98\n\n"
    "URI: index.v1_json\nContent-Type: application/vnd.pypi.simple.latest+json; qs=0.98\n"
).encode()
