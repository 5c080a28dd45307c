"""Shared pieces of the widgets: the lazy ipywidgets import, figures as PNG, small HTML builders."""

from __future__ import annotations

import html
import io
from typing import Any

from nbtoolkit.theme import COLOURS, MUTED

MIN_IPYWIDGETS = (8, 0)
INSTALL_HINT = ("pip install 'nbtoolkit[notebook]' (ipywidgets>=8.1 in the kernel; on JupyterLab 4 / SageMaker "
                "Studio also jupyterlab_widgets>=3 where the server runs), then restart the kernel")


def widgets():
    """The ipywidgets module, or an ImportError that says how to install it."""
    try:
        import ipywidgets
    except ImportError as error:
        raise ImportError(f"nbtoolkit.ui needs ipywidgets: {INSTALL_HINT}") from error
    version = tuple(int(part) for part in ipywidgets.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_IPYWIDGETS:
        raise ImportError(f"nbtoolkit.ui needs ipywidgets 8, found {ipywidgets.__version__}: {INSTALL_HINT}")
    return ipywidgets


def figure_png(figure: Any, dpi: int = 96) -> bytes:
    """A matplotlib Figure as PNG bytes (for an Image widget or an inline <img>)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def figure_svg(figure: Any) -> bytes:
    """A matplotlib Figure as SVG bytes: crisp at any displayed size (for an Image widget with format "svg+xml")."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()


# Widest a figure is drawn (px): a chart readable at a glance, never one filling the screen.
FIGURE_MAX_PX = 720
# Fills its box without its margins spilling over (width 100% plus the widgets' margins scrolls sideways).
FULL_WIDTH = "calc(100% - 6px)"


def figure_image(figure: Any, *css_classes: str) -> Any:
    """An Image widget showing `figure` as SVG at its own size (at most FIGURE_MAX_PX, and never wider than its
    box): crisp, and never stretched."""
    w = widgets()
    width = min(round(figure.get_figwidth() * 96), FIGURE_MAX_PX)
    image = w.Image(value=figure_svg(figure), format="svg+xml",
                    layout=w.Layout(width=f"{width}px", max_width=FULL_WIDTH, height="auto"))
    return add_classes(image, *css_classes)


def png_img(png: bytes, alt: str = "figure") -> str:
    """An <img> tag holding PNG bytes inline."""
    import base64

    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def message_html(text: str, kind: str = "info") -> str:
    """One coloured line: kind info, ok, warning or error."""
    colour = COLOURS.get(kind, MUTED)
    icon = {"ok": "✓", "warning": "⚠", "error": "✗"}.get(kind, "")
    return (f'<div class="nbt-msg nbt-msg-{kind}" style="color:{colour};white-space:pre-wrap">'
            f"{icon + ' ' if icon else ''}{html.escape(text)}</div>")


def pre_html(text: str, max_height: str = "16em") -> str:
    """Preformatted text in a scrolling box."""
    return (f'<pre style="max-height:{max_height};overflow:auto;margin:0;font-size:12px;white-space:pre-wrap">'
            f"{html.escape(text)}</pre>")


def frame_html(frame: Any, max_rows: int = 20) -> str:
    """A DataFrame (or Styler) as an HTML table, long frames cut to `max_rows`."""
    from pandas.io.formats.style import Styler

    if isinstance(frame, Styler):
        return frame.to_html()
    if len(frame) > max_rows:
        note = f"<div style='color:{MUTED}'>first {max_rows} of {len(frame):,} rows</div>"
        return frame.head(max_rows).to_html(escape=True) + note
    return frame.to_html(escape=True)


def add_classes(widget: Any, *names: str) -> Any:
    for name in names:
        widget.add_class(name)
    return widget
