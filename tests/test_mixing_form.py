"""MixForm without a browser: sliders, normalize, presets, advice and the live share chart."""

from __future__ import annotations

import pytest

from nbtoolkit.mixing import MixConfig, MixError, mix_preset

pytest.importorskip("ipywidgets")
from nbtoolkit.ui import MixForm  # noqa: E402


def test_defaults_to_a_valid_balanced_mix_with_the_css_classes():
    form = MixForm()
    assert form.value == mix_preset("balanced-50")
    assert "nbt-mix-form" in form.widget._dom_classes
    assert "nbt-mix-customer" in form.customer._dom_classes
    assert "nbt-mix-chart" in form.chart._dom_classes
    assert "nbt-normalize" in form.normalize._dom_classes
    assert "valid mix" in form.status.value
    # Vector, so it is crisp at whatever size the page draws it.
    assert form.chart.format == "svg+xml" and b"<svg" in bytes(form.chart.value)
    assert form.preset.value == "balanced-50"  # the opening mix is the preset, not "custom"


def test_weights_off_100_are_read_normalized_until_normalize_writes_them_back():
    form = MixForm(MixConfig(50, {"reasoning-instruction-following": 60, "rai": 40}))
    chart = form.chart.value
    form.sliders["chat"].value = 25
    assert form.problems and "sum to 125.00" in form.status.value
    assert form.value.category_weights == {"chat": 20.0, "rai": 32.0, "reasoning-instruction-following": 48.0}
    assert form.chart.value != chart  # redrawn with the new shares
    form.normalize.click()
    assert form.problems == []
    assert form.sliders["chat"].value == 20 and form.sliders["rai"].value == 32
    assert "normalized" in form.status.value


def test_presets_set_every_slider_and_editing_marks_the_form_custom():
    form = MixForm()
    form.preset.value = "all-categories-50"
    assert form.value == mix_preset("all-categories-50")
    assert form.sliders["reasoning-instruction-following"].value == 45 and form.customer.value == 50
    form.customer.value = 70
    assert form.preset.value == "custom" and form.value.customer_data_percent == 70
    form.preset.value = "customer-only"
    assert form.value == MixConfig.customer_only()
    assert "customer data only" in form.status.value


def test_advice_shows_for_a_mix_without_reasoning_instruction_following_or_rai():
    form = MixForm(MixConfig(50, {"instruction-following": 100}))
    assert "reasoning-instruction-following" in form.status.value and "rai is 0" in form.status.value
    form.sliders["rai"].value = 10
    form.sliders["reasoning-instruction-following"].value = 50
    assert "rai is 0" not in form.status.value and "no reasoning-instruction-following" not in form.status.value


def test_all_zero_weights_with_general_share_is_an_error_not_a_crash():
    form = MixForm(MixConfig(50, {"rai": 100}))
    form.sliders["rai"].value = 0
    with pytest.raises(MixError, match="every category weight is 0"):
        form.value
    assert "every category weight is 0" in form.status.value
    form.normalize.click()
    assert "every category weight is 0" in form.status.value


def test_a_form_over_some_categories_only():
    form = MixForm(categories=["chat", "rai", "reasoning-instruction-following"])
    assert set(form.sliders) == {"chat", "rai", "reasoning-instruction-following"}
    assert set(form.value.category_weights) <= set(form.sliders)
    form.preset.value = "all-categories-50"
    assert set(form.value.category_weights) == set(form.sliders) and "not shown here" in form.status.value
    with pytest.raises(MixError, match="does not show math"):
        form.value = MixConfig(50, {"math": 100})
    with pytest.raises(MixError, match="did you mean 'chat'"):
        MixForm(categories=["chats"])
    assert "MixForm" in form.fallback_html() and "<svg" in form.fallback_html()


def test_the_preset_is_named_whenever_the_sliders_equal_one():
    form = MixForm(MixConfig(60, {"chat": 100}))
    assert form.preset.value == "custom"
    seed = mix_preset("all-categories-50")
    for category, slider in form.sliders.items():
        slider.value = seed.category_weights.get(category, 0.0)
    form.customer.value = seed.customer_data_percent
    assert form.preset.value == "all-categories-50"
    form.sliders["chat"].value += 5
    assert form.preset.value == "custom"


def test_a_typed_customer_share_out_of_range_is_refused_with_a_message():
    form = MixForm()
    form.customer_box.value = 150
    assert form.customer.value == 50 and form.customer_box.value == 50
    assert "between 0 and 100" in form.status.value and "150" in form.status.value
    form.customer_box.value = 75
    assert form.customer.value == 75 and form.value.customer_data_percent == 75
    form.customer.value = 60  # the slider writes back into the box
    assert form.customer_box.value == 60


def test_normalize_at_customer_100_keeps_the_category_weights():
    form = MixForm(MixConfig(50, {"chat": 60, "rai": 40}))
    form.customer.value = 100
    form.sliders["chat"].value = 90
    form.normalize.click()
    assert form.value == MixConfig.customer_only()
    assert form.sliders["chat"].value == pytest.approx(69.2) and form.sliders["rai"].value == pytest.approx(30.8)
    form.customer.value = 50
    assert form.value.category_weights == pytest.approx({"chat": 69.2, "rai": 30.8})
