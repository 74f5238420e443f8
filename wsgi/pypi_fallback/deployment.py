"""What a deployment needs before its first request, made by ``regen-rules``.

Apache refuses to start without the claims map its RewriteMaps read (two files); a repository
answers 404 until its root listing exists; ``<prefix>/`` needs its page of repositories.
``regen-rules`` is run at install and after every config change (a new repository), so it
makes them there, as the owner of the state folder; each is written only when missing or
changed, so running it again is cheap and changes nothing published.
"""

from __future__ import annotations

from .config import Settings
from .listing import TYPE_MAP, build_repos_page, render_json, render_repos_html
from .pages import refresh_landing
from .regen import refresh_roots
from .storage import Tree, Writer, add_claims, write_listing


def prepare_deployment(settings: Settings) -> None:
    """The claims map, an (empty, for a new repository) root listing for every repository,
    and the repositories page at ``<prefix>/`` (HTML and JSON, negotiated like listings; the
    HTML is the landing page of ``pages`` when ``server.pages`` is on)."""
    tree = Tree.of(settings)
    add_claims(tree, {})  # both of its files, when missing
    refresh_roots(settings, settings.repos)
    page = build_repos_page((name, repo.fallback) for name, repo in settings.repos.items())
    body = render_json(page)
    try:
        same = (settings.root / "index.v1_json").read_bytes() == body
    except FileNotFoundError:
        same = False
    if not same:
        write_listing(Writer(), settings.root, settings.root, body, render_repos_html(page),
                      TYPE_MAP)
    # with the pages on, the HTML answer is the landing page (repos, recent, search)
    refresh_landing(settings, None)
