"""Reports rendered from Markdown to safe HTML.

`pro` and richer processors return their output as a Markdown report: headings, numbered and nested lists,
fenced code, block quotes, pipe tables, bare URLs and `[^1]` footnote citations. `render_markdown` parses it with
markdown-it-py (CommonMark, plus GFM tables and strikethrough, linkify and footnotes) and then passes the HTML
through nh3 (ammonia) with an explicit allow-list, so the page never trusts the parser alone:

* raw HTML in a report is shown as text (`html=False`), never interpreted;
* a link survives only when it is http(s); any other destination (javascript:, data:, vbscript:, mailto:,
  relative) fails markdown-it's link validation, so the author's Markdown is shown as written;
* images are not loaded (the page's CSP forbids remote images, and a remote image would tell a third party
  who reads the report): each becomes a link to the image, labelled with its alt text;
* a report's `#` becomes `<h3>` (h2→h4, anything deeper→h6), so it cannot outrank the page's own headings;
* table alignment comes out as the `align` attribute, because the CSP forbids inline `style`.

Cost: markdown-it's parsing is linear in practice and nesting beyond `maxNesting` (20) is not descended into,
so 10,000 `>` or list markers cost no recursion. It is pure Python, though: measured on the 2-core development
machine, a 20 KB real-shaped report renders in about 25-35 ms and a 1 MB one in about 1.6 s (nh3's share is
under a tenth), and link-dense text costs more per byte. So texts over `MAX_MARKDOWN_CHARS` are not parsed but
shown escaped in a `<pre>`, and callers on an event loop should render in a worker thread.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from mdit_py_plugins.footnote import footnote_plugin

__all__ = ["ALLOWED_ATTRIBUTES", "ALLOWED_TAGS", "MAX_MARKDOWN_CHARS", "ReportNode", "render_markdown", "render_report"]

# Above this (1 MiB of characters) a report is shown as preformatted text: parsing 1 MB takes about 1.6 s, the
# most one page view should cost, while the Task API's reports are tens of kilobytes.
MAX_MARKDOWN_CHARS = 1_048_576

ALLOWED_TAGS: frozenset[str] = frozenset(
    {
        "p", "br", "hr", "h3", "h4", "h5", "h6", "blockquote", "pre", "code",
        "ul", "ol", "li", "em", "strong", "s", "del", "a", "sup",
        "table", "thead", "tbody", "tr", "th", "td", "section",
    }
)  # fmt: skip

ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "a": frozenset({"href", "title", "target", "id", "class"}),  # rel is set by nh3 itself (LINK_REL)
    "ol": frozenset({"start", "class"}),
    "li": frozenset({"id", "class"}),
    "th": frozenset({"align"}),
    "td": frozenset({"align"}),
    "hr": frozenset({"class"}),
    "sup": frozenset({"class"}),
    "section": frozenset({"class"}),
}

LINK_REL = "noopener noreferrer nofollow"

# The footnote plugin's fixed class names, per tag; any other class is dropped.
_ALLOWED_CLASSES: dict[str, frozenset[str]] = {
    "a": frozenset({"footnote-backref"}),
    "ol": frozenset({"footnotes-list"}),
    "li": frozenset({"footnote-item"}),
    "hr": frozenset({"footnotes-sep"}),
    "sup": frozenset({"footnote-ref"}),
    "section": frozenset({"footnotes"}),
}

_HTTP_URL = re.compile(r"https?://", re.IGNORECASE)
# The anchors the footnote plugin writes: fn1, fnref1, fnref1:2, or with a document id fn-<doc>-1.
_FOOTNOTE_ID = re.compile(r"fn(?:ref)?(?:-[A-Za-z0-9_]{1,64}-)?[0-9]{1,9}(?::[0-9]{1,9})?")
_DOC_ID = re.compile(r"[A-Za-z0-9_]{1,64}")
_HEADING_SHIFT = {"h1": "h3", "h2": "h4", "h3": "h5", "h4": "h6", "h5": "h6", "h6": "h6"}
_ALIGN = re.compile(r"text-align:(left|center|right)")


def _is_http_url(url: str) -> bool:
    return _HTTP_URL.match(url) is not None


class _HttpOnlyMarkdownIt(MarkdownIt):
    def validateLink(self, url: str) -> bool:
        # Used by links, images, <autolinks> and linkify alike: anything but http(s) is left as the author's text.
        return _is_http_url(url)


def _rewrite_inline(children: list[Token], *, links: bool = True) -> list[Token]:
    """Keep http(s) links, drop the rest to their text, and turn images into links (or text, where `links` is off)."""
    out: list[Token] = []
    # For each open link, whether its link_open was kept, so the matching link_close follows suit.
    kept: list[bool] = []
    for idx, tok in enumerate(children):
        if tok.type == "link_open":
            keep = links and _is_http_url(str(tok.attrGet("href") or ""))
            if keep and tok.markup == "linkify":
                # linkify's fuzzy matches ("main.py", "example.com") are file names and prose far more often than
                # links in a report: keep only what was written as a URL. Its matched text follows link_open.
                text = children[idx + 1].content if idx + 1 < len(children) else ""
                keep = _is_http_url(text) or text[:4].lower() == "www."
            kept.append(keep)
            if keep:
                tok.attrSet("target", "_blank")
                out.append(tok)
        elif tok.type == "link_close":
            if kept.pop() if kept else False:
                out.append(tok)
        elif tok.type == "image":
            # An <a> inside an <a> is not valid HTML (browsers split it), so inside a link an image is only its label.
            out.extend(_image_as_link(tok, link=links and not any(kept)))
        else:
            out.append(tok)
    return out


def _image_as_link(image: Token, *, link: bool) -> list[Token]:
    src = str(image.attrGet("src") or "")
    # The alt text is parsed Markdown and may itself hold links: those become text, as the image becomes the link.
    label = _rewrite_inline(list(image.children or []), links=False) or [Token("text", "", 0, content=src)]
    if not (link and _is_http_url(src)):
        return label
    link_open = Token("link_open", "a", 1, attrs={"href": src, "target": "_blank"})
    if title := image.attrGet("title"):
        link_open.attrSet("title", str(title))
    return [link_open, *label, Token("link_close", "a", -1)]


def _make_safe(state: StateCore) -> None:
    """Core rule, run after linkify and the footnote tail: links, images, headings and table alignment."""
    for tok in state.tokens:
        if tok.type in ("heading_open", "heading_close"):
            tok.tag = _HEADING_SHIFT.get(tok.tag, tok.tag)
        elif tok.type in ("th_open", "td_open"):
            style = str(tok.attrGet("style") or "")
            tok.attrs.pop("style", None)
            if match := _ALIGN.fullmatch(style):
                tok.attrSet("align", match.group(1))
        elif tok.type == "inline" and tok.children:
            tok.children = _rewrite_inline(tok.children)


def _build_parser() -> MarkdownIt:
    md = _HttpOnlyMarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False})
    md.enable(["table", "strikethrough", "linkify"])
    # Fuzzy e-mail matches would become mailto: links, which validateLink refuses anyway.
    md.linkify.set({"fuzzy_email": False})  # type: ignore[union-attr]
    md.use(footnote_plugin)
    md.core.ruler.push("taskdeck_safe", _make_safe)
    return md


_PARSER = _build_parser()


def _filter_attribute(tag: str, attribute: str, value: str) -> str | None:
    # nh3 has already dropped tags and attributes outside the allow-list; this pins what their values may be.
    if attribute == "href":
        return value if _is_http_url(value) or (value.startswith("#") and _FOOTNOTE_ID.fullmatch(value[1:])) else None
    if attribute == "id":
        return value if _FOOTNOTE_ID.fullmatch(value) else None
    if attribute == "class":
        classes = [c for c in value.split() if c in _ALLOWED_CLASSES.get(tag, frozenset())]
        return " ".join(classes) or None
    if attribute == "target":
        return value if value == "_blank" else None
    if attribute == "align":
        return value if value in ("left", "center", "right") else None
    if attribute == "start":
        return value if value.isascii() and value.isdigit() and len(value) <= 9 else None
    return value  # title: plain text, escaped by the serializer


def _keep_footnote_anchor(url: str) -> str | None:
    # Relative URLs: only the footnote plugin's in-page anchors.
    return url if url.startswith("#") and _FOOTNOTE_ID.fullmatch(url[1:]) else None


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    clean_content_tags={"script", "style"},
    attributes={tag: set(attrs) for tag, attrs in ALLOWED_ATTRIBUTES.items()},
    attribute_filter=_filter_attribute,
    link_rel=LINK_REL,
    url_schemes={"http", "https"},
    url_relative=_keep_footnote_anchor,
    strip_comments=True,
)


def render_markdown(text: str, *, doc_id: str | None = None) -> str:
    """A Markdown report as HTML that is safe to put in a page.

    `doc_id` (letters, digits, `_`) prefixes the footnote anchors (`fn-<doc_id>-1`), so that two reports on one
    page do not share ids; without it they are `fn1`, `fnref1`.
    """
    if len(text) > MAX_MARKDOWN_CHARS:
        return f"<pre>{html.escape(text, quote=False)}</pre>"
    env: dict[str, object] = {}
    if doc_id is not None:
        if not _DOC_ID.fullmatch(doc_id):
            raise ValueError(f"doc_id must be 1-64 letters, digits or '_', not {doc_id!r}")
        env["docId"] = doc_id
    return _CLEANER.clean(_PARSER.render(text, env))


# A report as data for the page to build with DOM calls (no HTML parsing in the browser): a text string,
# or [tag, {attribute: value}, [children]]. Only ALLOWED_TAGS and their allowed attributes (plus the rel
# nh3 sets on links) ever appear; text is plain text (entities decoded), never markup.
ReportNode = str | list[Any]
_VOID = frozenset({"br", "hr"})


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: list[ReportNode] = []
        self._stack: list[list[ReportNode]] = [self.root]
        self._open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            return  # nh3 let none through; children, if any, stay in place as text
        allowed = ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ({"rel"} if tag == "a" else frozenset())
        node: list[Any] = [tag, {k: v for k, v in attrs if k in allowed and v is not None}, []]
        self._stack[-1].append(node)
        if tag not in _VOID:
            self._stack.append(node[2])
            self._open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._open:
            while self._open:  # close up to the matching tag (nh3's output is well formed)
                self._stack.pop()
                if self._open.pop() == tag:
                    break

    def handle_data(self, data: str) -> None:
        self._stack[-1].append(data)


def render_report(text: str, *, doc_id: str | None = None) -> list[ReportNode]:
    """A Markdown report as a tree of allowed tags, attributes and plain text (see :data:`ReportNode`).

    The same rendering and sanitising as :func:`render_markdown`; the page builds it with
    ``createElement``/``setAttribute``/text nodes, so no HTML from upstream is ever parsed there.
    """
    builder = _TreeBuilder()
    builder.feed(render_markdown(text, doc_id=doc_id))
    builder.close()
    return builder.root
