"""The kernel check of notebook 00: versions against nbtoolkit's bounds, SageMaker Studio markers, the %pip line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from packaging.specifiers import SpecifierSet

from nbtoolkit.environment import (MISSING, OK, TOO_NEW, TOO_OLD, PackageCheck, check_environment,
                                   merge_requirements, nbtoolkit_requirements, studio_markers)

REPO = Path(__file__).resolve().parents[1]
REQUIREMENTS = (">=3.11,<3.14", ["numpy>=1.26", "pandas>=2.3", "torch>=2.8,<2.15", "boto3>=1.34",
                                 "boto3>=1.35"])
NOWHERE = Path("/nonexistent/resource-metadata.json")


def report(versions, python="3.12.1"):
    return check_environment(requirements=REQUIREMENTS, version_of=versions.get, python=python, environ={},
                             metadata_file=NOWHERE)


def test_statuses_follow_the_bounds():
    assert PackageCheck("numpy", ">=1.26", "1.26.4").status == OK
    assert PackageCheck("numpy", ">=1.26", "1.24.0").status == TOO_OLD
    assert PackageCheck("torch", ">=2.8,<2.15", "2.15.0").status == TOO_NEW
    assert PackageCheck("torch", ">=2.8,<2.15", "2.13.0+cpu").status == OK
    assert PackageCheck("torch", ">=2.8,<2.15", None).status == MISSING


def test_a_studio_like_kernel_needs_nothing():
    checked = report({"numpy": "1.26.4", "pandas": "2.3.3", "torch": "2.8.0", "boto3": "1.40.0"})
    assert checked.ok and checked.pip_command() is None
    assert "Every requirement is met" in str(checked)


def test_the_pip_line_names_only_what_is_missing_or_too_old():
    checked = report({"numpy": "1.24.0", "pandas": "2.3.3", "boto3": "1.40.0"})
    assert [check.name for check in checked.problems] == ["numpy", "torch"]
    assert checked.pip_command() == '%pip install "numpy>=1.26" "torch>=2.8,<2.15"'
    text = str(checked)
    assert "numpy (too old), torch (missing)" in text and text.endswith(checked.pip_command())
    assert "nbt-env-pip" in checked._repr_html_() and "too old" in checked._repr_html_()


def test_a_requirement_listed_twice_must_hold_both_bounds():
    assert merge_requirements(["boto3>=1.34", "boto3>=1.35", "torch>=2.8,<2.15"]) == {
        "boto3": ">=1.34,>=1.35", "torch": ">=2.8,<2.15"}
    assert report({"numpy": "1.26.4", "pandas": "2.3.3", "torch": "2.8.0", "boto3": "1.34.5"}).problems[0].name \
        == "boto3"


def test_a_python_outside_the_range_has_no_pip_fix():
    checked = report({"numpy": "1.26.4", "pandas": "2.3.3", "torch": "2.8.0", "boto3": "1.40.0"}, python="3.14.0")
    assert not checked.ok and checked.rows()[0] == ("python", "3.14.0", ">=3.11,<3.14", TOO_NEW)
    assert "choose another kernel" in checked.verdict()


def test_studio_is_recognized_by_its_metadata_file_and_variables(tmp_path):
    assert studio_markers({}, NOWHERE) == ()
    metadata_file = tmp_path / "resource-metadata.json"
    metadata_file.write_text(json.dumps({"AppType": "CodeEditor", "DomainId": "d-1"}))
    markers = studio_markers({"SAGEMAKER_SPACE_NAME": "my-space", "HOME": "/home/sagemaker-user"}, metadata_file)
    assert markers == (f"{metadata_file} (app type CodeEditor)", "SAGEMAKER_SPACE_NAME=my-space")
    checked = check_environment(requirements=REQUIREMENTS, version_of={}.get, environ={"SAGEMAKER_APP_TYPE": "x"},
                                metadata_file=NOWHERE)
    assert checked.looks_like_studio and "SageMaker Studio: yes" in str(checked)


def test_the_requirements_are_the_checkouts_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    python_required, lines = nbtoolkit_requirements(["local"])
    assert python_required == project["requires-python"]
    def bounds(requirements):
        return {name: SpecifierSet(spec) for name, spec in merge_requirements(requirements).items()}

    # The same bounds whether read from pyproject.toml (a checkout) or from the installed wheel's metadata.
    assert bounds(lines) == bounds(project["dependencies"] + project["optional-dependencies"]["local"])


def test_this_test_environment_meets_every_requirement():
    checked = check_environment(["local", "notebook", "dev"])
    assert checked.ok, str(checked)


def test_an_installed_wheel_answers_from_its_metadata(monkeypatch):
    from types import SimpleNamespace

    import nbtoolkit.environment as environment

    wheel = SimpleNamespace(requires=["numpy>=1.26", 'torch<2.15,>=2.8; extra == "local"', 'pytest>=8; extra == "dev"'],
                            metadata={"Requires-Python": "<3.14,>=3.11"})
    monkeypatch.setattr(environment, "_CHECKOUT_PYPROJECT", NOWHERE)
    monkeypatch.setattr(environment.metadata, "distribution", lambda name: wheel)
    assert nbtoolkit_requirements(["local"]) == (">=3.11,<3.14", ["numpy>=1.26", "torch<2.15,>=2.8"])
