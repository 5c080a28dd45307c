import pytest

import nbtoolkit


def test_every_exported_name_resolves():
    for name in nbtoolkit.__all__:
        assert getattr(nbtoolkit, name) is not None, name


def test_importing_the_package_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, nbtoolkit; nbtoolkit.ColumnMapping; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_unknown_name_raises_attribute_error():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        getattr(nbtoolkit, "NoSuchThing")
