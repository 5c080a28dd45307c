"""What every nbtoolkit widget view shares: display with a plain-HTML fallback, and quiet batch updates."""

from __future__ import annotations

import contextlib
import html
from collections.abc import Iterator
from typing import Any

from nbtoolkit.ui._widgets import COLOURS, INSTALL_HINT, MUTED

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class WidgetView:
    """Base of the forms and views: `.widget` is the root box; displaying the object displays it.

    The display bundle also carries `text/html` (`fallback_html()`), which a frontend shows when it cannot render
    widgets (no widget manager, a static viewer), so the object never shows up as a bare "VBox(...)" there.
    """

    widget: Any
    _holding = 0

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        bundle["text/plain"] = repr(self)
        fallback = self.fallback_html()
        if fallback:
            bundle["text/html"] = fallback
        return bundle

    def fallback_html(self) -> str:
        """What a frontend without widgets shows instead (a snapshot plus the fix)."""
        return widgets_missing_html(type(self).__name__)

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        """Set several widgets without one refresh per change; refresh once at the end."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1

    @property
    def _held(self) -> bool:
        return self._holding > 0


def widgets_missing_html(name: str, snapshot: str = "") -> str:
    """The note shown where widgets do not render, above an optional static snapshot."""
    return (f'<div class="nbt-fallback" style="border-left:3px solid {COLOURS["warning"]};padding:2px 8px;'
            f'color:{MUTED}">'
            f"{html.escape(name)}: the interactive form did not render here (widgets need a live kernel and the "
            f"Jupyter widgets extension: {html.escape(INSTALL_HINT)}; run notebooks/00_environment_check to check)."
            f"</div>{snapshot}")
