"""MixForm: the data mix as sliders (customer share + one weight per category), kept to the mixing rules
(docs/data-mixing.md), with a normalize action, presets, the advisor's advice and a live chart of each source's
share of a batch."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from nbtoolkit.advisor import check_rai, check_reasoning_instruction_following
from nbtoolkit.mixing.config import CATEGORIES, MIX_PRESETS, SUM_TOLERANCE, MixConfig, MixError, mix_problems
from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import FULL_WIDTH, MUTED, add_classes, figure_svg, frame_html, message_html, widgets

CUSTOM = "custom"


class MixForm(WidgetView):
    """Edit a MixConfig: `customer` (customer_data_percent), `sliders[category]` (weights of the general share),
    `normalize` (rescale the weights to sum to 100), `preset` (all-categories-50, balanced-50, customer-75,
    customer-only), `status` (sum, rule problems, advice) and `chart` (mix_share_figure, redrawn on every change).

    `.value` is the MixConfig the sliders describe; weights that do not sum to 100 are read normalized (the
    status says so) until Normalize writes the normalized values back. Set `.value` to load a config.
    categories: the categories to show (e.g. GeneralDataRegistry.categories); default all 22.
    """

    def __init__(self, value: MixConfig | None = None, *, categories: Sequence[str] | None = None,
                 chart: bool = True) -> None:
        w = widgets()
        shown = list(categories) if categories is not None else list(CATEGORIES)
        unknown = [c for c in shown if c not in CATEGORIES]
        if unknown:
            MixConfig(0, {unknown[0]: 100})  # raises MixError naming the closest category
        self.categories = shown
        self._chart_enabled = chart
        self._holding = 0

        self.customer = add_classes(w.FloatSlider(value=50.0, min=0, max=100, step=1, description="customer %",
                                                  readout=False, continuous_update=False,
                                                  tooltip="customer_data_percent: your data's share of each batch",
                                                  layout=w.Layout(width="360px")), "nbt-mix-customer")
        self.customer.style.description_width = "90px"
        # A typed value is checked, not clamped by the slider: 150 says why it is not taken.
        self.customer_box = add_classes(w.FloatText(value=50.0, step=1, layout=w.Layout(width="70px"),
                                                    tooltip="customer_data_percent (0-100)"), "nbt-mix-customer-box")
        self.sliders = {}
        for category in shown:
            slider = w.FloatSlider(value=0.0, min=0, max=100, step=0.1, description=category, readout_format=".1f",
                                   continuous_update=False, description_allow_html=False, tooltip=category,
                                   layout=w.Layout(width="auto"))
            slider.style.description_width = "250px"  # the longest, reasoning-instruction-following, whole
            self.sliders[category] = add_classes(slider, "nbt-mix-weight", f"nbt-mix-{category}")
        self.preset = add_classes(w.Dropdown(options=[*MIX_PRESETS, CUSTOM], value=CUSTOM, description="preset",
                                             layout=w.Layout(width="260px")), "nbt-mix-preset")
        self.preset.style.description_width = "60px"
        self.normalize = add_classes(w.Button(description="Normalize", icon="balance-scale",
                                              tooltip="rescale the category weights to sum to 100"), "nbt-normalize")
        self.status = add_classes(w.HTML(), "nbt-mix-status")
        self.chart = add_classes(w.Image(format="svg+xml", layout=w.Layout(width="540px", max_width=FULL_WIDTH)),
                                 "nbt-mix-chart")
        grid = w.GridBox(list(self.sliders.values()),
                         layout=w.Layout(grid_template_columns="repeat(auto-fill, minmax(470px, 1fr))",
                                         grid_gap="0 8px"))
        self.widget = add_classes(w.VBox([
            w.HTML(f"<b>Data mix</b> <span style='color:{MUTED}'>customer share of every batch; the category "
                   "weights split the rest and sum to 100 (docs/data-mixing.md)</span>"),
            w.HBox([self.customer, self.customer_box, self.preset, self.normalize],
                   layout=w.Layout(flex_flow="row wrap")),
            grid, self.status, self.chart]), "nbt-mix-form")

        self.customer.observe(self._on_customer_change, names="value")
        self.customer_box.observe(self._on_customer_box_change, names="value")
        for slider in self.sliders.values():
            slider.observe(self._on_weight_change, names="value")
        self.preset.observe(self._on_preset_change, names="value")
        self.normalize.on_click(self._on_normalize_click)
        self.value = value if value is not None else MIX_PRESETS["balanced-50"].restricted_to(shown) \
            if any(c in shown for c in MIX_PRESETS["balanced-50"].category_weights) else MixConfig.customer_only()

    # -- the config ---------------------------------------------------------------------------------------------

    @property
    def raw_weights(self) -> dict[str, float]:
        return {c: float(s.value) for c, s in self.sliders.items() if s.value > 0}

    @property
    def problems(self) -> list[str]:
        """The mixing rules the slider positions break as they stand (empty when they form a valid mix)."""
        return mix_problems(float(self.customer.value), self.raw_weights)

    @property
    def value(self) -> MixConfig:
        """The MixConfig of the sliders (weights read normalized when they do not sum to 100)."""
        customer = float(self.customer.value)
        if customer >= 100:
            return MixConfig.customer_only()
        if not self.raw_weights:
            raise MixError(f"customer_data_percent is {customer:g} but every category weight is 0: give the "
                           "general share to some categories (or set customer to 100)")
        return MixConfig.normalized(customer, self.raw_weights)

    @value.setter
    def value(self, mix: MixConfig) -> None:
        hidden = [c for c in mix.category_weights if c not in self.sliders]
        if hidden:
            raise MixError(f"this form does not show {', '.join(hidden)}; create it with those categories")
        with self._hold():
            self.customer.value = mix.customer_data_percent
            weights = mix.category_weights
            for category, slider in self.sliders.items():
                slider.value = weights.get(category, 0.0)
        if not self._held:
            self._name_preset()
        self._refresh()

    # -- events -------------------------------------------------------------------------------------------------

    def _on_customer_change(self, change: dict) -> None:
        with self._hold():
            self.customer_box.value = float(change["new"])
        if not self._held:
            self._name_preset()
            self._refresh()

    def _on_customer_box_change(self, change: dict) -> None:
        if self._held:
            return
        typed = float(change["new"])
        if not 0 <= typed <= 100:
            with self._hold():
                self.customer_box.value = float(self.customer.value)
            self._refresh(note=f"customer % must be between 0 and 100: {typed:g} was not taken (it stays "
                               f"{self.customer.value:g})", kind="error")
            return
        self.customer.value = typed

    def _on_weight_change(self, change: dict) -> None:
        if not self._held:
            self._name_preset()
            self._refresh()

    def _on_preset_change(self, change: dict) -> None:
        if self._held or change["new"] == CUSTOM:
            return
        preset = MIX_PRESETS[change["new"]]
        missing = [c for c in preset.category_weights if c not in self.sliders]
        mix = preset.restricted_to(self.categories) if missing and preset.mixing else preset
        self._holding += 1  # keep the preset's name while its values are written
        try:
            self.value = mix
        finally:
            self._holding -= 1
        self._refresh(note=f"preset {change['new']}" + (f" (without {', '.join(missing)}, not shown here)"
                                                        if missing else ""))

    def _on_normalize_click(self, button: Any = None) -> None:
        try:
            mix = self.value
        except MixError as error:
            self._refresh(note=str(error), kind="error")
            return
        if not mix.mixing:
            # Customer only: the weights are not used now, but are kept (normalized) for a lower customer share.
            total = sum(self.raw_weights.values())
            if total:
                with self._hold():
                    for category, slider in self.sliders.items():
                        slider.value = round(100 * float(slider.value) / total, 1)
            self._refresh(note="customer only: category weights normalized; they apply once customer % is below 100"
                          if total else "customer only: no category weights to normalize")
            return
        self.value = mix
        self._refresh(note="weights normalized to sum to 100")

    def _name_preset(self) -> None:
        """Name the preset the sliders now equal, or "custom"."""
        name = self._matching_preset()
        if self.preset.value != name:
            with self._hold():
                self.preset.value = name

    def _matching_preset(self) -> str:
        try:
            mix = self.value
        except MixError:
            return CUSTOM
        for name, preset in MIX_PRESETS.items():
            if preset.mixing and any(c not in self.sliders for c in preset.category_weights):
                preset = preset.restricted_to(self.categories)
            if _same_mix(mix, preset):
                return name
        return CUSTOM

    # -- display ------------------------------------------------------------------------------------------------

    def _refresh(self, note: str | None = None, kind: str = "ok") -> None:
        if self._held:
            return
        total = sum(self.raw_weights.values())
        customer = float(self.customer.value)
        lines = []
        if note:
            lines.append(message_html(note, kind))
        problems = self.problems
        try:
            mix = self.value
        except MixError as error:
            mix = None
            lines.append(message_html(str(error), "error"))
        if customer >= 100:
            lines.append(message_html("customer data only: no general data is mixed in"
                                      + (" (category weights are ignored)" if total else ""), "info"))
        elif problems and mix is not None:
            lines.append(message_html(f"category weights sum to {total:.2f}, not 100 (±{SUM_TOLERANCE}): the chart "
                                      "and .value use them normalized; click Normalize to write them back",
                                      "warning"))
        elif mix is not None:
            lines.append(message_html(f"valid mix: weights sum to {total:.2f}", "ok"))
        if mix is not None:
            for advice in check_reasoning_instruction_following(mix) + check_rai(mix):
                lines.append(message_html(advice.message, "warning"))
        self.status.value = "".join(lines)
        if self._chart_enabled and mix is not None:
            from nbtoolkit.plots import mix_share_figure

            self.chart.value = figure_svg(mix_share_figure(mix))

    def fallback_html(self) -> str:
        try:
            mix = self.value
        except MixError as error:
            return widgets_missing_html(type(self).__name__, message_html(str(error), "error"))
        table = frame_html(mix.table().round(3))
        snapshot = f"<div>{html.escape(str(mix))}</div>{table}" + _svg_html(self.chart.value)
        return widgets_missing_html(type(self).__name__, snapshot)

    def __repr__(self) -> str:
        try:
            return f"MixForm({self.value})"
        except MixError as error:
            return f"MixForm(invalid: {error})"


def _same_mix(one: MixConfig, other: MixConfig, tolerance: float = 0.05) -> bool:
    if abs(one.customer_data_percent - other.customer_data_percent) > tolerance:
        return False
    if not one.mixing or not other.mixing:
        return one.mixing == other.mixing
    a, b = one.category_weights, other.category_weights
    return all(abs(a.get(c, 0.0) - b.get(c, 0.0)) <= tolerance for c in {*a, *b})


def _svg_html(svg: bytes) -> str:
    """The chart's SVG inline (the XML prolog dropped), for frontends without widgets."""
    text = bytes(svg).decode("utf-8") if svg else ""
    return text[text.find("<svg"):] if "<svg" in text else ""
