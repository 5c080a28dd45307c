"""What this kernel holds against what nbtoolkit needs: the Python and package versions, whether it looks like a
SageMaker Studio image, and the one `%pip install` line that fixes what is missing or too old.

Widget-free: notebook 00 displays the report, `str(report)` reads in a terminal.
"""

from __future__ import annotations

import html
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

DISTRIBUTION = "nbtoolkit"
DEFAULT_EXTRAS = ("local", "notebook")
# Written into every Studio app (a documented contract):
# https://docs.aws.amazon.com/sagemaker/latest/dg/notebooks-run-and-manage-metadata.html
STUDIO_METADATA_FILE = Path("/opt/ml/metadata/resource-metadata.json")
# Set by Studio in its JupyterLab and Code Editor spaces.
STUDIO_ENV_VARS = ("SAGEMAKER_APP_TYPE", "SAGEMAKER_APP_TYPE_LOWERCASE", "SAGEMAKER_SPACE_NAME",
                   "SAGEMAKER_INTERNAL_IMAGE_URI")

OK, MISSING, TOO_OLD, TOO_NEW = "ok", "missing", "too old", "too new"
_CHECKOUT_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@dataclass(frozen=True)
class PackageCheck:
    """One requirement of nbtoolkit and what this kernel has for it."""

    name: str
    required: str
    installed: str | None

    @property
    def status(self) -> str:
        if self.installed is None:
            return MISSING
        try:
            version = Version(self.installed)
        except InvalidVersion:
            return OK  # a version pip cannot parse was installed by hand: do not second-guess it
        specifier = SpecifierSet(self.required)
        if specifier.contains(version, prereleases=True):
            return OK
        below = any(spec.operator in (">=", ">", "==", "~=") and version < Version(spec.version)
                    for spec in specifier)
        return TOO_OLD if below else TOO_NEW

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def pip_argument(self) -> str:
        return f'"{self.name}{self.required}"'


@dataclass(frozen=True, repr=False)
class EnvironmentReport:
    """The kernel against nbtoolkit's requirements; `pip_command()` is the line that fixes what is wrong."""

    python: str
    python_required: str
    executable: str
    packages: tuple[PackageCheck, ...]
    studio_markers: tuple[str, ...]
    extras: tuple[str, ...] = DEFAULT_EXTRAS

    @property
    def python_ok(self) -> bool:
        return not self.python_required or SpecifierSet(self.python_required).contains(self.python)

    @property
    def looks_like_studio(self) -> bool:
        return bool(self.studio_markers)

    @property
    def problems(self) -> tuple[PackageCheck, ...]:
        return tuple(check for check in self.packages if not check.ok)

    @property
    def ok(self) -> bool:
        return self.python_ok and not self.problems

    def pip_command(self) -> str | None:
        """The one `%pip install` line that brings every missing or too-old package within nbtoolkit's bounds
        (pip leaves the packages that already satisfy them alone), or None when nothing needs installing."""
        if not self.problems:
            return None
        return "%pip install " + " ".join(check.pip_argument for check in self.problems)

    def verdict(self) -> str:
        """What is wrong and what to do, or that the kernel is ready (the pip line itself is pip_command())."""
        if not self.python_ok:
            return (f"Python {self.python} is outside what nbtoolkit supports ({self.python_required}): choose "
                    "another kernel or image (SageMaker Distribution 3.x has Python 3.12); no pip line fixes this.")
        if not self.problems:
            return "Every requirement is met: this kernel can run the notebooks."
        names = ", ".join(f"{check.name} ({check.status})" for check in self.problems)
        return (f"Outside nbtoolkit's bounds: {names}. Run the line below in a cell, then restart the kernel "
                "(Kernel > Restart Kernel) and run the notebook again.")

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(package, installed, required, status) rows, Python first."""
        python_status = OK if self.python_ok else TOO_NEW if self._python_above() else TOO_OLD
        return [("python", self.python, self.python_required, python_status)] + [
            (check.name, check.installed or "-", check.required or "any", check.status) for check in self.packages]

    def studio_line(self) -> str:
        if not self.studio_markers:
            return "SageMaker Studio: no (none of its markers found)"
        return "SageMaker Studio: yes (" + "; ".join(self.studio_markers) + ")"

    def __str__(self) -> str:
        table = self.rows()
        widths = [max(len(row[column]) for row in table + [_HEADER]) for column in range(4)]
        lines = [f"kernel: {self.executable}", self.studio_line(), ""]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                  for row in [_HEADER] + table]
        fix = [self.pip_command()] if self.python_ok and self.problems else []
        return "\n".join(lines + ["", self.verdict()] + fix)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr class='nbt-env-{status.replace(' ', '-')}'>"
            + "".join(f"<td>{html.escape(cell)}</td>" for cell in (name, installed, required))
            + f"<td><b>{html.escape(status)}</b></td></tr>"
            for name, installed, required, status in self.rows())
        head = "".join(f"<th>{html.escape(cell)}</th>" for cell in _HEADER)
        fix = html.escape(self.verdict())
        if self.python_ok and self.problems:
            fix += f"<br><code class='nbt-env-pip'>{html.escape(self.pip_command())}</code>"
        return (f"<div class='nbt-environment'><p>kernel: <code>{html.escape(self.executable)}</code><br>"
                f"{html.escape(self.studio_line())}</p><table><thead><tr>{head}</tr></thead><tbody>{cells}"
                f"</tbody></table><p>{fix}</p></div>")

    def _python_above(self) -> bool:
        return any(spec.operator in ("<", "<=") and Version(self.python) >= Version(spec.version)
                   for spec in SpecifierSet(self.python_required))


_HEADER = ("package", "installed", "required", "status")


def nbtoolkit_requirements(extras: Iterable[str] = DEFAULT_EXTRAS) -> tuple[str, list[str]]:
    """(requires-python, requirement strings) of nbtoolkit with these extras: from the checkout's pyproject.toml
    when nbtoolkit runs from a checkout (it is the truth for that code), else from the installed metadata."""
    extras = tuple(extras)
    if _CHECKOUT_PYPROJECT.is_file():
        import tomllib

        project = tomllib.loads(_CHECKOUT_PYPROJECT.read_text())["project"]
        lines = list(project.get("dependencies", []))
        for extra in extras:
            lines += project.get("optional-dependencies", {}).get(extra, [])
        return project.get("requires-python", ""), lines
    distribution = metadata.distribution(DISTRIBUTION)
    lines = []
    for line in distribution.requires or []:
        requirement = Requirement(line)
        if requirement.marker is None or any(requirement.marker.evaluate({"extra": extra})
                                             for extra in ("", *extras)):
            lines.append(str(requirement).split(";")[0].strip())
    python_required = distribution.metadata.get("Requires-Python", "")
    return _lower_bounds_first(str(spec) for spec in SpecifierSet(python_required)), lines


def merge_requirements(lines: Iterable[str]) -> dict[str, str]:
    """name -> combined specifier (a package listed twice, as boto3 is, must satisfy both)."""
    merged: dict[str, tuple[str, list[str]]] = {}
    for line in lines:
        requirement = Requirement(line)
        name, parts = merged.setdefault(canonicalize_name(requirement.name), (requirement.name, []))
        # Keep the order written in pyproject.toml (">=2.8,<2.15"); SpecifierSet would sort it.
        parts += [str(spec) for spec in requirement.specifier if str(spec) not in parts]
    return {name: _lower_bounds_first(parts) for name, parts in merged.values()}


def _lower_bounds_first(parts: Iterable[str]) -> str:
    return ",".join(sorted(parts, key=lambda part: not part.startswith(">")))


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def studio_markers(environ: Mapping[str, str] | None = None,
                   metadata_file: Path = STUDIO_METADATA_FILE) -> tuple[str, ...]:
    """What in this process says "SageMaker Studio": the app metadata file (with its app type) and the
    environment variables Studio sets. Empty on any other machine."""
    environ = os.environ if environ is None else environ
    found = []
    if metadata_file.is_file():
        try:
            app_type = json.loads(metadata_file.read_text()).get("AppType")
        except (OSError, ValueError, AttributeError):
            app_type = None
        found.append(f"{metadata_file}" + (f" (app type {app_type})" if app_type else ""))
    found += [f"{name}={environ[name]}" for name in STUDIO_ENV_VARS if environ.get(name)]
    return tuple(found)


def check_environment(extras: Iterable[str] = DEFAULT_EXTRAS, *,
                      requirements: tuple[str, list[str]] | None = None,
                      version_of: Callable[[str], str | None] = installed_version,
                      python: str | None = None,
                      environ: Mapping[str, str] | None = None,
                      metadata_file: Path = STUDIO_METADATA_FILE) -> EnvironmentReport:
    """Check this kernel against nbtoolkit's requirements (base plus `extras`; add "aws" for SageMaker jobs).
    The keyword arguments replace what is read from the machine (for tests)."""
    extras = tuple(extras)
    python_required, lines = requirements if requirements is not None else nbtoolkit_requirements(extras)
    checks = tuple(PackageCheck(name, required, version_of(name))
                   for name, required in merge_requirements(lines).items())
    return EnvironmentReport(python=python or platform.python_version(), python_required=python_required,
                             executable=sys.executable, packages=checks,
                             studio_markers=studio_markers(environ, metadata_file), extras=extras)

