import pandas as pd
import pytest

from nbtoolkit.data.rows import number_rows
from nbtoolkit.data.sanitize import (
    RESERVED_STRINGS, find_reserved, html_to_text, rewrite_reserved, sanitize_frame,
)


@pytest.mark.parametrize("marker", ["System:", "SYSTEM:", "User:", "USER:", "Bot:", "BOT:", "Assistant:",
                                    "ASSISTANT:", "Thought:"])
def test_role_markers_get_a_space_before_the_colon(marker):
    text = f"log line {marker} hello"
    out = rewrite_reserved(text)
    assert out == f"log line {marker[:-1]} : hello"
    assert find_reserved(out) == []


@pytest.mark.parametrize("token", ["[EOS]", "<image>", "<video>", "<unk>"])
def test_bracket_tokens_are_stripped(token):
    assert rewrite_reserved(f"a{token}b") == "ab"


def test_rewrite_is_case_sensitive_like_the_validator():
    assert rewrite_reserved("the system: is down") == "the system: is down"
    # A marker glued to a word is still the substring the chat template reacts to: rewritten, and then clean.
    assert rewrite_reserved("MySystem: x") == "MySystem : x"
    assert find_reserved("MySystem : x") == []


def test_every_reserved_string_is_removed_by_a_rewrite():
    text = " ".join(RESERVED_STRINGS)
    assert find_reserved(rewrite_reserved(text)) == []


def test_html_to_text_keeps_code_and_paragraphs():
    body = ("<p>I tried this &amp; it fails:</p>\n<pre><code>for i in range(3):\n    print(i &lt; 2)\n"
            "</code></pre><p>Why<br>now?</p><ul><li>one</li><li>two</li></ul>")
    text = html_to_text(body)
    assert "I tried this & it fails:" in text
    assert "for i in range(3):\n    print(i < 2)" in text
    assert "Why\nnow?" in text
    assert "- one\n- two" in text
    assert "<" not in text.replace("i < 2", "")


def test_sanitize_frame_records_each_change_and_never_modifies_the_input():
    frame = number_rows(pd.DataFrame({"q": ["fine", "User: hi [EOS]", "<p>a &amp; b</p>"], "a": ["x", "y", "z"]}))
    before = frame.copy()
    result = sanitize_frame(frame, ["q", "a"], html_columns=["q"])
    pd.testing.assert_frame_equal(frame, before)
    assert result.frame["q"].tolist() == ["fine", "User : hi ", "a & b"]
    rules = {(c.row, c.rule) for c in result.changes}
    assert rules == {(2, "reserved_rewrite"), (3, "html_to_text")}
    change = next(c for c in result.changes if c.rule == "reserved_rewrite")
    assert "User:" in change.detail and "[EOS]" in change.detail and change.before == "User: hi [EOS]"
    assert result.summary() == {"changes": {"html_to_text": 1, "reserved_rewrite": 1}, "rows_changed": 2,
                                "rows_dropped": 0}


def test_drop_mode_removes_rows_and_reports_original_row_numbers():
    frame = number_rows(pd.DataFrame({"q": ["ok", "Assistant: no", "ok too", "<unk>"]}))
    result = sanitize_frame(frame, ["q"], reserved="drop")
    assert result.dropped_rows == [2, 4]
    assert list(result.frame.index) == [1, 3]


def test_reject_mode_leaves_text_for_the_validator():
    frame = number_rows(pd.DataFrame({"q": ["User: x"]}))
    result = sanitize_frame(frame, ["q"], reserved="reject")
    assert result.frame["q"].tolist() == ["User: x"] and result.changes == []


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="reserved must be one of"):
        sanitize_frame(pd.DataFrame({"q": ["x"]}), ["q"], reserved="ignore")


def test_change_record_shows_the_text_around_the_change():
    long = "x" * 500 + " User: here " + "y" * 500
    frame = number_rows(pd.DataFrame({"q": [long]}))
    (change,) = sanitize_frame(frame, ["q"]).changes
    assert "User: here" in change.before and "User : here" in change.after
    assert change.before.startswith("…") and len(change.before) < 200
