"""A document (invoice or credit note) as an A4 PDF, with ReportLab (pure-Python wheels; no
system libraries). The layout follows the HTML page: seller top right, title and status top
left, bill-to and facts, the lines with their tiers, totals, notes.

Text is set in Bitstream Vera (shipped inside ReportLab, embedded in the PDF), which covers
Latin scripts; characters outside it (CJK names, for instance) print as a missing glyph.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from pricing.wording import Row
from services.documents.model import Document

_INK = colors.HexColor("#1f2328")
_MUTED = colors.HexColor("#59636e")
_RULE = colors.HexColor("#d1d9e0")
_BANNER = {
    "draft": colors.HexColor("#9a6700"),
    "void": colors.HexColor("#cf222e"),
    "paid": colors.HexColor("#1a7f37"),
    "credit_note": colors.HexColor("#0969da"),
}
_WIDTH = A4[0] - 36 * mm
_COLUMNS = (_WIDTH - 3 * 30 * mm, 30 * mm, 30 * mm, 30 * mm)


@cache
def _fonts() -> tuple[str, str]:
    """Register Vera and Vera Bold from ReportLab's own fonts folder (once)."""
    import reportlab
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    folder = Path(reportlab.__file__).with_name("fonts")
    pdfmetrics.registerFont(TTFont("Meter", str(folder / "Vera.ttf")))
    pdfmetrics.registerFont(TTFont("Meter-Bold", str(folder / "VeraBd.ttf")))
    pdfmetrics.registerFontFamily(
        "Meter", normal="Meter", bold="Meter-Bold", italic="Meter", boldItalic="Meter-Bold"
    )
    return "Meter", "Meter-Bold"


def _style(name: str, **options: Any) -> ParagraphStyle:
    regular, bold = _fonts()
    base: dict[str, Any] = {"fontName": regular, "fontSize": 9, "leading": 12, "textColor": _INK}
    base.update(options)
    if base.pop("bold", False):
        base["fontName"] = bold
    return ParagraphStyle(name, **base)


def _text(value: object) -> str:
    return escape(str(value))


def render_pdf(doc: Document) -> bytes:
    """The document as PDF bytes (its title and author in the PDF's metadata)."""
    buffer = io.BytesIO()
    seller = doc.seller.get("name") or ""
    template = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=16 * mm,
        title=doc.title,
        author=seller,
        subject=doc.title,
    )
    story: list[Any] = [_header(doc), Spacer(1, 6 * mm), _parties(doc), Spacer(1, 6 * mm)]
    story += [_lines(doc), Spacer(1, 4 * mm), _totals(doc), Spacer(1, 8 * mm)]
    note_style = _style("note", textColor=_MUTED)
    for index, note in enumerate(doc.notes):
        emphasis = index == 0 and doc.status == "draft"
        style = _style("draft", bold=True, textColor=_BANNER["draft"]) if emphasis else note_style
        story += [Paragraph(_text(note), style), Spacer(1, 2 * mm)]
    decorate = _Decoration(doc)
    template.build(story, onFirstPage=decorate, onLaterPages=decorate)
    return buffer.getvalue()


def _header(doc: Document) -> Table:
    left: list[Any] = [
        Paragraph(_text(doc.title), _style("title", fontSize=18, leading=22, bold=True))
    ]
    if doc.banner:
        color = _BANNER.get(doc.status, _INK)
        left.append(
            Paragraph(
                _text(doc.banner),
                _style("banner", fontSize=14, leading=20, bold=True, textColor=color),
            )
        )
    seller = doc.seller
    lines = [f"<b>{_text(seller['name'])}</b>"] if seller.get("name") else []
    lines += [_text(line) for line in seller.get("address") or []]
    if seller.get("tax_id"):
        lines.append(f"Tax ID {_text(seller['tax_id'])}")
    if seller.get("email"):
        lines.append(_text(seller["email"]))
    right = Paragraph("<br/>".join(lines), _style("seller", alignment=TA_RIGHT))
    table = Table([[left, right]], colWidths=(_WIDTH * 0.5, _WIDTH * 0.5))
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 1.5, _INK),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 8),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _parties(doc: Document) -> Table:
    label = _style("label", fontSize=7, textColor=_MUTED)
    bill_to = doc.bill_to
    name = bill_to.get("name") or bill_to.get("customer_id") or ""
    lines = [f"<b>{_text(name)}</b>", *(_text(line) for line in bill_to.get("address") or [])]
    if bill_to.get("email"):
        lines.append(_text(bill_to["email"]))
    left = [Paragraph("BILL TO", label), Paragraph("<br/>".join(lines), _style("billto"))]
    facts = Table(
        [
            [
                Paragraph(_text(key), _style("key", textColor=_MUTED)),
                Paragraph(_text(value), _style("value")),
            ]
            for key, value in doc.facts
        ],
        colWidths=(32 * mm, 52 * mm),
    )
    facts.setStyle(
        TableStyle([("TOPPADDING", (0, 0), (-1, -1), 1), ("BOTTOMPADDING", (0, 0), (-1, -1), 1)])
    )
    table = Table([[left, facts]], colWidths=(_WIDTH - 86 * mm, 86 * mm))
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return table


def _lines(doc: Document) -> Table:
    head = _style("head", fontSize=7, textColor=_MUTED, bold=True)
    head_right = _style("headr", fontSize=7, textColor=_MUTED, bold=True, alignment=TA_RIGHT)
    data: list[list[Any]] = [
        [
            Paragraph("DESCRIPTION", head),
            Paragraph("QUANTITY", head_right),
            Paragraph("UNIT PRICE", head_right),
            Paragraph(f"AMOUNT ({_text(doc.currency)})", head_right),
        ]
    ]
    commands: list[tuple[Any, ...]] = [
        ("LINEBELOW", (0, 0), (-1, 0), 0.8, _INK),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
    for row in doc.rows:
        data.append(_cells(row, tier=False))
        commands.append(("LINEABOVE", (0, len(data) - 1), (-1, len(data) - 1), 0.4, _RULE))
        for tier in row.sub:
            data.append(_cells(tier, tier=True))
            commands.append(("TOPPADDING", (0, len(data) - 1), (-1, len(data) - 1), 0))
    table = Table(data, colWidths=_COLUMNS, repeatRows=1)
    table.setStyle(TableStyle(commands))
    return table


def _cells(row: Row, *, tier: bool) -> list[Paragraph]:
    color = _MUTED if tier else _INK
    size = 8 if tier else 9
    text = _text(row.description)
    if row.detail:
        text += f'<br/><font color="#59636e" size="8">{_text(row.detail)}</font>'
    left = _style("cell", fontSize=size, textColor=color, leftIndent=5 * mm if tier else 0)
    right = _style("num", fontSize=size, textColor=color, alignment=TA_RIGHT)
    return [
        Paragraph(text, left),
        Paragraph(_text(row.quantity), right),
        Paragraph(_text(row.unit_price), right),
        Paragraph(_text(row.amount), right),
    ]


def _totals(doc: Document) -> Table:
    rows: Sequence[tuple[str, str]] = doc.totals
    data = []
    for index, (label, value) in enumerate(rows):
        last = index == len(rows) - 1
        size = 11 if last else 9
        data.append(
            [
                Paragraph(_text(label), _style("tl", fontSize=size, leading=size + 4, bold=last)),
                Paragraph(
                    _text(value),
                    _style("tv", fontSize=size, leading=size + 4, bold=last, alignment=TA_RIGHT),
                ),
            ]
        )
    table = Table(data, colWidths=(60 * mm, 40 * mm), hAlign="RIGHT")
    table.setStyle(TableStyle([("LINEABOVE", (0, len(data) - 1), (-1, len(data) - 1), 1.2, _INK)]))
    return table


class _Decoration:
    """What every page carries: its number, and a large faint DRAFT or VOID across a draft or
    a void invoice, so that no page of one can pass for an invoice to pay."""

    def __init__(self, doc: Document) -> None:
        self.mark = {"draft": "DRAFT", "void": "VOID"}.get(doc.status)
        self.color = _BANNER.get(doc.status, _INK)

    def __call__(self, canvas: Any, template: Any) -> None:
        regular, bold = _fonts()
        canvas.saveState()
        if self.mark:
            canvas.setFillColor(self.color, alpha=0.10)
            canvas.setFont(bold, 110)
            canvas.translate(A4[0] / 2, A4[1] / 2)
            canvas.rotate(35)
            canvas.drawCentredString(0, -40, self.mark)
            canvas.rotate(-35)
            canvas.translate(-A4[0] / 2, -A4[1] / 2)
        canvas.setFont(regular, 7)
        canvas.setFillColor(_MUTED)
        label = f"{template.title} — page {canvas.getPageNumber()}"
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, label)
        canvas.restoreState()
