"""The report as data: the blocks that sections build and that every renderer draws.

A `Document` is a title and a list of blocks:

- `Heading(text, level, anchor)`: a section (level 2) or a subsection (level 3);
- `Paragraph(text)`: prose (a text may hold line breaks: lines of one paragraph);
- `Bullets(items)`: a list of prose items;
- `Table(header, rows, caption)`: rows of typed `Cell`s. A cell keeps its value and names its format
  (`formats.FORMATS`), so Markdown, HTML and the terminal write the same text from the same value, and the HTML
  page sorts a column by the values themselves;
- `Figure(name, alt, draw, chart)`: a PNG that `draw(path)` writes (the PNG renderer calls it), with an optional
  interactive `chart` (a plotly figure spec) that the HTML page shows in its place;
- `Chart(spec)`: an interactive chart only the HTML page shows.

Prose has exactly two inline spans, the same in every renderer: `` `code` `` and `**strong**`. Nothing else is
markup, and no renderer reads structure out of text: a table's caption, a section's heading and a cell's number
are fields of their blocks. (docutils keeps one node tree behind all of Sphinx's builders for the same reason.)
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from . import formats as fmt

INLINE = re.compile(r"`([^`]+)`|\*\*([^*]+)\*\*")  # the two inline spans: `code`, **strong**


def spans(text: str) -> list[tuple[str, str]]:
    """`text` as (kind, text) spans, kind "plain", "code" or "strong": how a renderer reads prose."""
    out: list[tuple[str, str]] = []
    position = 0
    for match in INLINE.finditer(text):
        if match.start() > position:
            out.append(("plain", text[position:match.start()]))
        out.append(("code", match.group(1)) if match.group(1) is not None else ("strong", match.group(2)))
        position = match.end()
    if position < len(text):
        out.append(("plain", text[position:]))
    return out


@dataclass(frozen=True)
class Cell:
    """One table cell: a value and its format (`kind`: "text", or a key of `formats.FORMATS`).

    A compound cell joins formatted parts with a template (`12.00 MiB (45.0%)`); it sorts by its first part."""

    value: Any = None
    kind: str = "text"
    digits: int | None = None
    template: str = ""
    parts: tuple["Cell", ...] = ()
    number: float | None = None  # a text cell's number, when it shows one (a raw int or float)

    @property
    def text(self) -> str:
        if self.parts:
            return self.template.format(*(p.text for p in self.parts))
        if self.kind == "text":
            return "" if self.value is None else str(self.value)
        return fmt.text(self.kind, self.value, self.digits)

    @property
    def sort_value(self) -> float | None:
        """The number the cell shows, for sorting (None: sort as text)."""
        if self.parts:
            return self.parts[0].sort_value
        if self.kind == "text":
            return self.number
        if fmt.is_missing(self.value):
            return None
        value = float(self.value)
        return value if math.isfinite(value) else None


def cell(value: Any) -> Cell:
    """A raw value as a cell: text as it is, a number written as Python writes it (and sorted by its value)."""
    if isinstance(value, Cell):
        return value
    if isinstance(value, bool) or value is None:
        return Cell("" if value is None else str(value))
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, (int, float)):
        return Cell(str(value), number=float(value) if math.isfinite(value) else None)
    return Cell(str(value))


# --- cell constructors, one per format ----------------------------------------------------------------------

def num(value: Any, kind: str, digits: int | None = None) -> Cell:
    if kind not in fmt.FORMATS:
        raise ValueError(f"unknown format {kind!r}")
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    return Cell(value, kind, digits)


def nbytes(value: Any) -> Cell:
    return num(value, "bytes")


def coef(value: Any) -> Cell:
    return num(value, "coef")


def ratio(value: Any, digits: int = 3) -> Cell:
    return num(value, "fixed", digits)


def fixed(value: Any, digits: int) -> Cell:
    return num(value, "fixed", digits)


def percent(value: Any, signed: bool = True, digits: int = 2) -> Cell:
    return num(value, "signed_percent" if signed else "percent", digits)


def times(value: Any, digits: int = 2) -> Cell:
    return num(value, "times", digits)


def ms(seconds: Any, digits: int = 1) -> Cell:
    return num(seconds, "ms", digits)


def load(cores: Any) -> Cell:
    """Other processes' busy cores while a time was measured, "(loaded)" above `formats.LOADED_CORES`."""
    return num(cores, "load", 2)


def count(value: Any) -> Cell:
    return num(value, "count")


def integer(value: Any) -> Cell:
    return num(value, "integer")


def sci(value: Any, digits: int = 2) -> Cell:
    return num(value, "sci", digits)


def code(text: Any) -> Cell:
    return Cell(f"`{text}`")


def strong(text: Any) -> Cell:
    return Cell(f"**{text}**")


def compound(template: str, *parts: Any) -> Cell:
    """Formatted parts joined by `template` (`"{} ({})"`), sorted by the first part."""
    return Cell(template=template, parts=tuple(cell(p) for p in parts))


# --- blocks ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2
    anchor: str = ""  # the HTML id (`section-<anchor>`); derived from the text when empty


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""  # the sentence that introduces the table (Markdown prints it above, HTML as <caption>)

    @property
    def text_rows(self) -> list[list[str]]:
        return [[c.text for c in row] for row in self.rows]


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], caption: str = "") -> Table:
    """A Table from raw values or cells (see `cell`)."""
    return Table(tuple(str(h) for h in header), tuple(tuple(cell(v) for v in row) for row in rows), caption)


@dataclass(frozen=True)
class Figure:
    """A PNG named `name` that `draw(path)` writes (returns the path, or None when the data cannot support it)."""

    name: str
    alt: str
    draw: Callable[[Any], Any] | None = field(default=None, compare=False)
    chart: dict[str, Any] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Chart:
    spec: dict[str, Any] = field(compare=False)


Block = Heading | Paragraph | Bullets | Table | Figure | Chart


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, blocks: Iterable[Block]) -> "Document":
        self.blocks.extend(blocks)
        return self

    def tables(self) -> list[Table]:
        return [b for b in self.blocks if isinstance(b, Table)]

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]

    def charts(self) -> list[dict[str, Any]]:
        """Every chart spec the HTML page draws, in page order."""
        found = []
        for b in self.blocks:
            if isinstance(b, Chart):
                found.append(b.spec)
            elif isinstance(b, Figure) and b.chart is not None:
                found.append(b.chart)
        return found


def plot(module: str, function: str, *args: Any, **kwargs: Any) -> Callable[[Any], Any]:
    """A figure's `draw`: `module.function(*args, path=path, **kwargs)`, the module imported only when the PNG
    is drawn (so a report without figures never loads matplotlib)."""
    def draw(path: Any) -> Any:
        import importlib

        return getattr(importlib.import_module(module), function)(*args, path=path, **kwargs)

    return draw


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
