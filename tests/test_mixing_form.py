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
    assert bytes(form.chart.value).startswith(b"\x89PNG")


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
    assert "MixForm" in form.fallback_html() and "<img" in form.fallback_html()
