import pytest

from nbtoolkit.labels import extract_label

LABELS = ("HQ", "LQ_EDIT", "LQ_CLOSE")


@pytest.mark.parametrize("reply,expected", [
    ("HQ", "HQ"), ("HQ.", "HQ"), ("  hq \n", "HQ"), ("The answer is HQ", "HQ"), ("**LQ_EDIT**", "LQ_EDIT"),
    ("lq close", "LQ_CLOSE"), ("LQ-EDIT, because...", "LQ_EDIT"), ("Category: LQ_CLOSE\nHQ", "LQ_CLOSE"),
    ("This is high quality", None), ("HQS", None), ("", None), (None, None), ("LQ", None),
])
def test_extract_label(reply, expected):
    assert extract_label(reply, LABELS) == expected


def test_first_mention_wins_and_labels_need_not_be_uppercase():
    assert extract_label("negative, not positive", ("positive", "negative")) == "negative"
