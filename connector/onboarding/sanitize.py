"""An allow-list HTML sanitiser for e-mail bodies written by a language model.

The model sees contact data typed in by strangers, so its output is treated as untrusted:
only formatting tags and harmless attributes survive; scripts, styles sheets, frames, forms
and other active content are dropped with everything inside them; ``on*`` handlers, and
``href``s that are not ``http``, ``https`` or ``mailto``, are removed; inline ``style``s that
could fetch or run something (``url(``, ``expression(``, ``javascript:``) are removed.
:func:`sanitize_html` returns the clean HTML and what it removed, so the caller can log it.
"""

from __future__ import annotations

import re
from html import escape
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset(
    {
        "a", "abbr", "b", "blockquote", "br", "caption", "center", "code", "div", "em", "h1",
        "h2", "h3", "h4", "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "small", "span",
        "strong", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "u", "ul",
    }
)  # fmt: skip
VOID_TAGS = frozenset({"br", "hr"})
DROP_WITH_CONTENT = frozenset(
    {
        "applet", "base", "button", "embed", "form", "frame", "frameset", "head", "iframe",
        "input", "link", "math", "meta", "noscript", "object", "option", "script", "select",
        "style", "svg", "template", "textarea", "title",
    }
)  # fmt: skip
DROP_VOID = frozenset({"base", "embed", "input", "link", "meta"})
"""dropped elements that have no end tag (so no content to skip)"""
ALLOWED_ATTRS = frozenset(
    {
        "align", "bgcolor", "border", "cellpadding", "cellspacing", "colspan", "dir", "height",
        "href", "lang", "rel", "rowspan", "style", "target", "title", "valign", "width",
    }
)  # fmt: skip
SAFE_SCHEMES = ("http://", "https://", "mailto:")
_BAD_STYLE = re.compile(r"url\s*\(|expression\s*\(|javascript:|@import|behavior\s*:", re.I)


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.removed: list[str] = []
        self._skip: list[str] = []  # open tags whose content is being dropped
        self._open: list[str] = []

    def _drop(self, what: str) -> None:
        if what not in self.removed:
            self.removed.append(what)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip:
            if (tag == self._skip[-1] or tag in DROP_WITH_CONTENT) and tag not in DROP_VOID:
                self._skip.append(tag)
            return
        if tag in DROP_VOID:
            self._drop(f"<{tag}>")
            return
        if tag in DROP_WITH_CONTENT:
            self._drop(f"<{tag}>")
            self._skip.append(tag)
            return
        if tag not in ALLOWED_TAGS:
            if tag not in ("html", "body"):
                self._drop(f"<{tag}>")
            return
        kept = []
        for name, value in attrs:
            value = value or ""
            if name.startswith("on") or name not in ALLOWED_ATTRS:
                self._drop(f"{name}=")
            elif name == "href" and (
                tag != "a" or not value.strip().lower().startswith(SAFE_SCHEMES)
            ):
                self._drop(f"href={value[:40]}")
            elif name == "style" and _BAD_STYLE.search(value):
                self._drop("style=")
            else:
                kept.append(f' {name}="{escape(value, quote=True)}"')
        if tag == "a" and any(k.startswith(' target="') for k in kept):
            kept = [k for k in kept if not k.startswith(' rel="')] + [' rel="noopener noreferrer"']
        self.out.append(f"<{tag}{''.join(kept)}>")
        if tag not in VOID_TAGS:
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID_TAGS or tag not in ALLOWED_TAGS:
            self.handle_starttag(tag, attrs)
            if tag in DROP_WITH_CONTENT and self._skip and self._skip[-1] == tag:
                self._skip.pop()  # <svg/> or <iframe/>: nothing inside to skip
            return
        self.handle_starttag(tag, attrs)
        self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag == self._skip[-1]:
                self._skip.pop()
            return
        if tag in self._open:
            while self._open:  # close what the model left open inside it
                top = self._open.pop()
                self.out.append(f"</{top}>")
                if top == tag:
                    break

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.out.append(escape(data, quote=False))

    def handle_comment(self, data: str) -> None:
        self._drop("<!-- -->")

    def handle_pi(self, data: str) -> None:
        self._drop("<?…>")

    def unknown_decl(self, data: str) -> None:
        self._drop("<!…>")

    def result(self) -> str:
        return "".join(self.out) + "".join(f"</{t}>" for t in reversed(self._open))


def sanitize_html(fragment: str) -> tuple[str, list[str]]:
    """``(clean HTML, what was removed)``; see the module docstring for the rules."""
    parser = _Sanitizer()
    parser.feed(fragment)
    parser.close()
    return parser.result(), parser.removed


def visible_text(fragment: str) -> str:
    """The text a reader would see (tags dropped), for "is it empty?" checks."""
    clean, _ = sanitize_html(fragment)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]*>", " ", clean)).strip()


__all__ = ["sanitize_html", "visible_text"]
