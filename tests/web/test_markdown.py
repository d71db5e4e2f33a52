"""Reports rendered by markdown-it-py and sanitised by nh3: every construct survives, nothing executable does."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest

from taskdeck.web.markdown import (
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    MAX_MARKDOWN_CHARS,
    ReportNode,
    render_markdown,
    render_report,
)

VOID = frozenset({"br", "hr", "img", "input", "meta", "link", "source", "wbr", "area", "base", "col", "embed"})


@dataclass
class Node:
    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text for c in self.children)

    def iter(self, tag: str | None = None) -> list[Node]:
        """This node and its descendants, in document order (optionally only those with `tag`)."""
        found = [self] if tag in (None, self.tag) else []
        for child in self.children:
            if isinstance(child, Node):
                found.extend(child.iter(tag))
        return found

    def kids(self, tag: str) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node) and c.tag == tag]


class _TreeBuilder(HTMLParser):
    """The output as the browser's tokenizer sees it; unbalanced or stray end tags fail the test."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root")
        self.stack = [self.root]
        self.all_tags: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.all_tags.append((tag, attrs))
        node = Node(tag, dict(attrs))
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.all_tags.append((tag, attrs))
        self.stack[-1].children.append(Node(tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.stack[-1].tag == tag, f"</{tag}> closes <{self.stack[-1].tag}>"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)

    def handle_comment(self, data: str) -> None:
        raise AssertionError(f"comment in output: {data!r}")


def parse(html_text: str) -> tuple[Node, list[tuple[str, list[tuple[str, str | None]]]]]:
    builder = _TreeBuilder()
    builder.feed(html_text)
    builder.close()
    assert builder.stack == [builder.root], "unclosed tags"
    return builder.root, builder.all_tags


HREF_OK = re.compile(r"https?://|#fn(ref)?(-\w+-)?\d+(:\d+)?$")


def assert_safe(html_text: str) -> Node:
    """Every tag and attribute is in the allow-list, and no attribute can run script or load anything."""
    lowered = html_text.lower()
    # Belt and braces over the walk below: these tags must not appear even as something the parser would skip.
    for needle in ("<script", "<img", "<iframe", "<svg", "<style", "<object", "<embed", "<form", "<math"):
        assert needle not in lowered, f"{needle} in {html_text!r}"
    root, tags = parse(html_text)
    for tag, attrs in tags:
        assert tag in ALLOWED_TAGS, f"<{tag}> is not allowed: {html_text!r}"
        for name, value in attrs:
            assert name == "rel" or name in ALLOWED_ATTRIBUTES.get(tag, ()), f"<{tag} {name}=...> in {html_text!r}"
            assert not name.startswith("on")
            assert name not in ("style", "src", "srcdoc", "action", "formaction")
            if name == "href":
                assert value is not None and HREF_OK.match(value), f"href={value!r}"
        if tag == "a" and dict(attrs).get("target") == "_blank":
            assert dict(attrs)["rel"] == "noopener noreferrer nofollow"
    return root


REPORT = """\
# Market assessment: industrial heat pumps in the EU

## Executive summary

The EU market for industrial heat pumps grew by roughly 20% in 2024,[^1] driven by gas prices
and the REPowerEU targets. Installed capacity remains concentrated in food, paper and chemicals,
where process heat below 150 °C dominates.[^2]

> **Caveat:** figures for 2024 are preliminary and revised in the
> spring; see the methodology note below.

## Key findings

1. Demand is led by *food and beverage* processing.
2. Supply is constrained by compressor capacity:
   - Three vendors hold over half the market.
   - Lead times reached 40 weeks.
     - Longest for units above 5 MW.
3. Policy support is ~~uniform~~ uneven across member states.

The list goes on after a word from the analyst:

3. Numbered lists can start anywhere.
4. Like this one.

### Vendors

| Vendor | Country | Share | Notes |
|:-------|:-------:|------:|-------|
| Alpha Thermal | DE | 24% | `HT-series` up to 200 °C |
| Borealis Heat | SE | 18% | acquired 2023 |
| Calor Systems | FR | 11% | see https://calor.example/press |

### Method

The model fits capacity against price with the following code:

```python
def fit(prices: list[float]) -> float:
    if len(prices) < 2:
        return 0.0
    return sum(prices) / len(prices)  # <mean>
```

Sources were collected on 2025-01-15 from www.iea.org and
<https://ec.example/energy/heat-pumps>; a contact address (press@vendor.example) and a file name
(model.py) are plain text.

---

[^1]: European Heat Pump Association, *Market report 2024*, https://ehpa.example/market-2024.
[^2]: IEA, "The Future of Heat Pumps", p. 42.
"""


def test_a_real_shaped_report_renders_every_construct() -> None:
    root = assert_safe(render_markdown(REPORT))

    # Headings are shifted down two levels so the report cannot outrank the page.
    assert [(h.tag, h.text) for h in root.iter() if h.tag.startswith("h") and h.tag[1:].isdigit()] == [
        ("h3", "Market assessment: industrial heat pumps in the EU"),
        ("h4", "Executive summary"),
        ("h4", "Key findings"),
        ("h5", "Vendors"),
        ("h5", "Method"),
    ]
    assert not root.iter("h1") and not root.iter("h2")

    # A paragraph over several lines stays one paragraph, with its footnote citations inline.
    summary = root.kids("p")[0]
    assert summary.text.startswith("The EU market for industrial heat pumps grew by roughly 20% in 2024,[1] driven")
    assert "gas prices\nand the REPowerEU targets. Installed capacity" in summary.text
    refs = summary.iter("sup")
    assert [(s.attrs["class"], s.kids("a")[0].attrs["href"], s.kids("a")[0].attrs["id"]) for s in refs] == [
        ("footnote-ref", "#fn1", "fnref1"),
        ("footnote-ref", "#fn2", "fnref2"),
    ]

    quote = root.kids("blockquote")
    assert len(quote) == 1
    assert quote[0].kids("p")[0].text == (
        "Caveat: figures for 2024 are preliminary and revised in the\nspring; see the methodology note below."
    )
    assert quote[0].iter("strong")[0].text == "Caveat:"

    # The numbered list, with a nested bullet list two levels deep inside its second item.
    first, second = root.kids("ol")[:2]
    items = first.kids("li")
    assert len(items) == 3
    assert "start" not in first.attrs
    assert items[0].iter("em")[0].text == "food and beverage"
    nested = items[1].kids("ul")[0]
    assert [li.children[0] for li in nested.kids("li")] == [
        "Three vendors hold over half the market.",
        "Lead times reached 40 weeks.\n",
    ]
    assert nested.kids("li")[1].kids("ul")[0].kids("li")[0].text == "Longest for units above 5 MW."
    assert items[2].iter("s")[0].text == "uniform"
    assert second.attrs["start"] == "3"
    assert [li.text for li in second.kids("li")] == ["Numbered lists can start anywhere.", "Like this one."]

    table = root.kids("table")[0]
    head = table.kids("thead")[0].kids("tr")[0].kids("th")
    assert [(th.text, th.attrs.get("align")) for th in head] == [
        ("Vendor", "left"),
        ("Country", "center"),
        ("Share", "right"),
        ("Notes", None),
    ]
    rows = table.kids("tbody")[0].kids("tr")
    assert [[td.text for td in tr.kids("td")] for tr in rows] == [
        ["Alpha Thermal", "DE", "24%", "HT-series up to 200 °C"],
        ["Borealis Heat", "SE", "18%", "acquired 2023"],
        ["Calor Systems", "FR", "11%", "see https://calor.example/press"],
    ]
    assert rows[0].iter("code")[0].text == "HT-series"
    assert rows[2].iter("a")[0].attrs["href"] == "https://calor.example/press"

    # Fenced code keeps its text exactly, "<" included, and is not parsed as Markdown or HTML.
    (pre,) = root.kids("pre")
    (code,) = pre.kids("code")
    assert code.text == (
        "def fit(prices: list[float]) -> float:\n"
        "    if len(prices) < 2:\n"
        "        return 0.0\n"
        "    return sum(prices) / len(prices)  # <mean>\n"
    )

    # Autolinks: bare URLs, www. and <...>; fuzzy matches (an e-mail address, a file name) stay text.
    links = {a.attrs["href"]: a for a in root.iter("a") if not str(a.attrs["href"]).startswith("#")}
    assert set(links) == {
        "https://calor.example/press",
        "http://www.iea.org",
        "https://ec.example/energy/heat-pumps",
        "https://ehpa.example/market-2024",
    }
    for a in links.values():
        assert a.attrs["target"] == "_blank"
        assert a.attrs["rel"] == "noopener noreferrer nofollow"
    sources = root.kids("p")[-1]
    assert "(press@vendor.example)" in sources.text
    assert "(model.py)" in sources.text

    # The author's thematic break, then the footnote separator and the footnotes themselves, linked both ways.
    assert [hr.attrs.get("class") for hr in root.iter("hr")] == [None, "footnotes-sep"]
    (section,) = root.kids("section")
    assert section.attrs["class"] == "footnotes"
    notes = section.kids("ol")[0].kids("li")
    assert [(li.attrs["id"], li.attrs["class"]) for li in notes] == [("fn1", "footnote-item"), ("fn2", "footnote-item")]
    assert notes[0].text.startswith(
        "European Heat Pump Association, Market report 2024, https://ehpa.example/market-2024."
    )
    assert notes[1].text.startswith('IEA, "The Future of Heat Pumps", p. 42.')
    for n, li in enumerate(notes, start=1):
        backref = [a for a in li.iter("a") if a.attrs.get("class") == "footnote-backref"]
        assert [a.attrs["href"] for a in backref] == [f"#fnref{n}"]
        assert "target" not in backref[0].attrs  # an in-page anchor opens no new tab


def _long_report(size: int) -> str:
    """REPORT's body repeated, with the footnotes once at the end, up to about `size` characters."""
    body, notes = REPORT.split("\n---\n")
    parts: list[str] = []
    total = 0
    while total < size:
        parts.append(body)
        total += len(body)
    return "\n".join(parts) + "\n---\n" + notes


def test_a_long_report_renders_each_section_and_stays_in_the_allow_list() -> None:
    text = _long_report(20_000)
    copies = text.count("## Key findings")
    assert copies >= 10
    root = assert_safe(render_markdown(text))
    assert len(root.kids("table")) == copies
    assert len(root.kids("pre")) == copies
    assert len(root.kids("blockquote")) == copies
    assert len(root.iter("h3")) == copies
    # Each copy cites both notes; repeated citations get their own back-references (fnref1:1, ...).
    assert len(root.iter("sup")) == 2 * copies
    (section,) = root.kids("section")
    assert len(section.kids("ol")[0].kids("li")) == 2
    backrefs = [a.attrs["href"] for a in section.iter("a") if a.attrs.get("class") == "footnote-backref"]
    assert len(backrefs) == 2 * copies
    assert "#fnref1:1" in backrefs


def test_a_one_megabyte_report_renders_in_bounded_time() -> None:
    text = _long_report(1_000_000)
    assert 1_000_000 < len(text) <= MAX_MARKDOWN_CHARS  # parsed, not shown preformatted
    started = time.perf_counter()
    out = render_markdown(text)
    elapsed = time.perf_counter() - started
    # About 1.6 s on a 2-core machine: the bound leaves room for a loaded CI run and still catches quadratic costs.
    assert elapsed < 10, elapsed
    assert out.count("<table>") == text.count("### Vendors")


XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=https://evil.example/x.js></SCRIPT>",
    '<img src=x onerror="alert(1)">',
    "<img src=x onerror=alert(1)//",
    "[x](javascript:alert(1))",
    "[x](JAVASCRIPT:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x](java&#x09;script:alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](javascript&colon;alert(1))",
    "[x]( javascript:alert(1) )",
    "[x](<javascript:alert(1)>)",
    "[x][ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "[x](file:///etc/passwd)",
    "![x](https://evil.example/x.png)",
    '![x](https://evil.example/x.png "t" onerror="alert(1)")',
    '<a href="javascript:alert(1)">x</a>',
    '<a href="https://ok.example" onclick="alert(1)">x</a>',
    '[x](https://a "\\" onmouseover=\\"alert(1))',
    '[x](https://a "\\" onmouseover=\\"alert(1)")',
    "[x](https://a 'a\\' onmouseover=alert(1)')",
    '[x](https://a" onmouseover="alert(1))',
    '[x](https://a?"><script>alert(1)</script>)',
    '<https://a"onmouseover="alert(1)>',
    'https://a.example/"onmouseover="alert(1)',
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    '<iframe src="https://evil.example"></iframe>',
    '<iframe srcdoc="<script>alert(1)</script>">',
    "<style>body{display:none}</style>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    '<p onmouseover="alert(1)">x</p>',
    "<math><mi xlink:href='javascript:alert(1)'>x</mi></math>",
    '<object data="javascript:alert(1)"></object>',
    "<!-- <script>alert(1)</script> -->",
    '<form action="javascript:alert(1)"><button>x</button></form>',
    "```\n</code></pre><script>alert(1)</script>\n```",
    "`</code><script>alert(1)</script>`",
    "| a |\n|---|\n| <script>alert(1)</script> |",
    "[^1]\n\n[^1]: <img src=x onerror=alert(1)> [x](javascript:alert(1))",
    '[<img src=x onerror=alert(1)>](https://a "<script>")',
    "[![x](javascript:alert(1))](https://a)",
    "![[x](javascript:alert(1))](https://a/x.png)",
    "> <script>alert(1)</script>\n> [x](javascript:alert(1))",
    "- [x](javascript:alert(1))\n  1. <iframe>",
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_produce_nothing_executable(payload: str) -> None:
    out = render_markdown(payload)
    assert_safe(out)
    # Raw HTML is shown as text (escaped), not dropped silently and never interpreted.
    if payload.startswith("<script>"):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in out


def test_non_http_links_are_left_as_the_authors_text() -> None:
    root = assert_safe(render_markdown("[a](javascript:alert(1)) [b](/relative) [c](#top) <mailto:x@y.example>"))
    assert not root.iter("a")
    assert root.text == "[a](javascript:alert(1)) [b](/relative) [c](#top) <mailto:x@y.example>\n"


def test_a_title_cannot_break_out_of_its_attribute() -> None:
    root = assert_safe(render_markdown('[x](https://a.example "\\" onmouseover=\\"alert(1)")'))
    (a,) = root.iter("a")
    assert a.attrs == {
        "href": "https://a.example",
        "title": '" onmouseover="alert(1)',
        "target": "_blank",
        "rel": "noopener noreferrer nofollow",
    }


def test_an_image_becomes_a_link_labelled_with_its_alt_text() -> None:
    root = assert_safe(render_markdown('![Figure *1*: capacity](https://cdn.example/f1.png "Capacity by year")'))
    (a,) = root.iter("a")
    assert a.attrs["href"] == "https://cdn.example/f1.png"
    assert a.attrs["title"] == "Capacity by year"
    assert a.text == "Figure 1: capacity"
    assert a.iter("em")[0].text == "1"
    # With no alt text the URL is the label; inside a link the image is only its label (no <a> in an <a>).
    root = assert_safe(
        render_markdown("![](https://cdn.example/f2.png) [![logo](https://cdn.example/l.png)](https://a.example)")
    )
    assert [(a.attrs["href"], a.text) for a in root.iter("a")] == [
        ("https://cdn.example/f2.png", "https://cdn.example/f2.png"),
        ("https://a.example", "logo"),
    ]


def test_footnote_anchors_take_the_document_id() -> None:
    root = assert_safe(render_markdown("Claim.[^a] Again.[^a]\n\n[^a]: Source.", doc_id="run_42"))
    assert [a.attrs["href"] for a in root.iter("sup")[0].iter("a")] == ["#fn-run_42-1"]
    assert [a.attrs["id"] for s in root.iter("sup") for a in s.iter("a")] == ["fnref-run_42-1", "fnref-run_42-1:1"]
    assert root.iter("section")[0].iter("li")[0].attrs["id"] == "fn-run_42-1"
    # The id is written into attributes by the footnote plugin unescaped, so only a safe alphabet is accepted.
    with pytest.raises(ValueError, match="doc_id"):
        render_markdown("x", doc_id='a" onclick="alert(1)')


PATHOLOGICAL = {
    "blockquotes": ">" * 10_000 + " deep",
    "nested bullets": "".join("  " * i + "- item\n" for i in range(2_000)),
    "nested markers": "- " * 10_000 + "deep",
    "numbered markers": "1. " * 10_000 + "deep",
    "emphasis": "*" * 50_000 + "a" + "_" * 50_000,
    "alternating emphasis": "*a **b " * 10_000,
    "brackets": "[" * 50_000 + "a" + "]" * 50_000,
    "link destinations": "[a](" * 20_000,
    "parentheses": "[a](" + "(" * 50_000 + ")" * 50_000,
    "backticks": "`" * 50_000 + "a",
    "tables": "|a|\n|-|\n" + "|x|\n" * 5_000,
    "footnote refs": "[^1]" * 5_000 + "\n\n[^1]: n",
    "autolinks": "https://a.example/ " * 5_000,
    "html lookalikes": "<a " * 20_000,
}


@pytest.mark.parametrize("text", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_pathological_input_renders_quickly_without_recursion(text: str) -> None:
    started = time.perf_counter()
    out = render_markdown(text)  # a RecursionError would fail the test here
    elapsed = time.perf_counter() - started
    assert elapsed < 5, elapsed
    assert_safe(out)


def test_a_text_over_the_limit_is_shown_preformatted() -> None:
    text = "<script>alert(1)</script> # not a heading\n" * (MAX_MARKDOWN_CHARS // 40 + 1)
    assert len(text) > MAX_MARKDOWN_CHARS
    out = render_markdown(text)
    root = assert_safe(out)
    (pre,) = root.kids("pre")
    assert pre.text == text


def _walk(nodes: list[ReportNode]) -> list[tuple[str, dict[str, str]]]:
    found: list[tuple[str, dict[str, str]]] = []
    for node in nodes:
        if isinstance(node, list):
            found.append((node[0], node[1]))
            found += _walk(node[2])
        else:
            assert isinstance(node, str)
    return found


def test_the_report_tree_has_the_structure_and_only_allowed_tags_and_attributes() -> None:
    tree = render_report(_long_report(20_000), doc_id="tsk_1")
    elements = _walk(tree)
    tags = {tag for tag, _ in elements}
    assert {"h3", "ul", "ol", "li", "table", "a", "pre", "code", "blockquote", "sup", "section"} <= tags
    for tag, attrs in elements:
        assert tag in ALLOWED_TAGS
        assert set(attrs) <= ALLOWED_ATTRIBUTES.get(tag, frozenset()) | ({"rel"} if tag == "a" else set())
        href = attrs.get("href", "https://")
        assert href.startswith(("https://", "http://", "#fn"))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_in_the_report_tree_stay_text(payload: str) -> None:
    tree = render_report(f"Before {payload} after")
    for tag, attrs in _walk(tree):
        assert tag in ALLOWED_TAGS and not any(k.startswith("on") or k in ("style", "src") for k in attrs)
        assert str(attrs.get("href", "https://")).lower().startswith(("https://", "http://", "#fn"))


def test_markup_in_the_text_stays_text_with_entities_decoded() -> None:
    tree = render_report("a <b>bold</b> &amp; `<script>`")
    paragraph = tree[0]
    assert isinstance(paragraph, list) and paragraph[0] == "p"
    assert all(isinstance(n, str) for n in tree[1:])  # only whitespace between blocks
    text = "".join(n if isinstance(n, str) else "".join(c for c in n[2] if isinstance(c, str)) for n in paragraph[2])
    assert text == "a <b>bold</b> & <script>"  # shown as written; the page puts it in text nodes
