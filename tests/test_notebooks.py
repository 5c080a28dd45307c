"""Notebooks: a static gate (valid, no outputs, one parameters cell, no nbtoolkit name that does not exist),
then each one executed headless with papermill in the tiny profile."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import json
import os
import re
import subprocess
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.specifiers import SpecifierSet

from jupyter_for_tests import write_kernelspec

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
CONTRACT = {"profile": "quick", "backend": "local", "workdir": "runs/notebooks"}
# Seconds for a whole notebook in the tiny profile (per-cell limit too); generous for a loaded 2-core machine.
TIMEOUT = {"default": 600}
# Also run alone in an empty workdir; the others run in order in one shared workdir (cheaper).
STANDALONE = ("05_compare_stages",)
_MAGIC = re.compile(r"^\s*[%!]")


def _read(path: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return notebook


def _code(cell) -> str:
    """A code cell's Python, with IPython magics and shell escapes blanked (line numbers kept)."""
    return "\n".join("" if _MAGIC.match(line) else line for line in cell.source.splitlines())


def _parameters_cell(notebook):
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_valid_and_committed_without_outputs(path):
    notebook = _read(path)
    assert notebook.metadata.get("kernelspec", {}).get("name") == "python3", "kernelspec python3 (the active env)"
    stored = [i for i, c in enumerate(notebook.cells)
              if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert stored == [], f"{path.name}: cells {stored} have stored outputs (clear them before committing)"
    first = notebook.cells[0]
    assert first.cell_type == "markdown" and first.source.startswith("# "), "starts with a markdown title"
    assert "what you will do" in first.source.lower(), "the title cell says what you will do"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_the_contract_parameters_cell(path):
    notebook = _read(path)
    cell = _parameters_cell(notebook)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert cell is first_code, "the parameters cell is the first code cell"
    values = {}
    for node in ast.parse(_code(cell)).body:
        assert isinstance(node, ast.Assign | ast.AnnAssign | ast.Expr), (
            f"line {node.lineno}: the parameters cell holds plain assignments only (papermill overrides them)")
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
    for name, default in CONTRACT.items():
        assert name in values, f"the parameters cell defines {name}"
        assert values[name] == default, f"{name} defaults to {default!r}, not {values[name]!r}"


def test_readme_lists_every_notebook():
    readme = (NOTEBOOK_DIR / "README.md").read_text()
    missing = [p.name for p in NOTEBOOKS if p.name not in readme]
    assert missing == [], f"notebooks/README.md does not list {missing}"


def test_binder_installs_what_the_bootstrap_installs():
    """Binder (repo2docker) builds from binder/: same torch (CPU build), constraints and embedded model."""
    from nbtoolkit.models import EMBEDDED_INSTALL_COMMAND

    repo = NOTEBOOK_DIR.parent
    post_build = repo / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    subprocess.run(["bash", "-n", str(post_build)], check=True)
    script = post_build.read_text()
    assert "-c scripts/constraints.txt" in script and "--no-deps" in script
    assert EMBEDDED_INSTALL_COMMAND.split()[-1] in script, f"postBuild installs {EMBEDDED_INSTALL_COMMAND}"
    torch = re.search(r'"torch==([\d.]+)"', (repo / "scripts" / "bootstrap.sh").read_text()).group(1)
    requirements = (repo / "binder" / "requirements.txt").read_text()
    assert f"torch=={torch}+cpu" in requirements.split(), f"binder/requirements.txt pins torch=={torch}+cpu"
    python = (repo / "binder" / "runtime.txt").read_text().strip()
    assert python == "python-3.11", python
    requires_python = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["requires-python"]
    assert SpecifierSet(requires_python).contains(python.removeprefix("python-")), requires_python
    assert "urlpath=lab/tree/notebooks" in (repo / "README.md").read_text(), "the README has the Binder badge"


# ---------------------------------------------------------------- API drift: every nbtoolkit name must exist


def _is_nbtoolkit(obj) -> bool:
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
    return module == "nbtoolkit" or module.startswith("nbtoolkit.")


def _attribute(obj, name: str):
    """getattr that also finds submodules and dataclass fields without defaults; raises AttributeError."""
    if inspect.ismodule(obj):
        try:
            return getattr(obj, name)
        except AttributeError:
            try:
                return importlib.import_module(f"{obj.__name__}.{name}")
            except ModuleNotFoundError:
                raise AttributeError(f"module {obj.__name__!r} has no attribute {name!r}") from None
    if dataclasses.is_dataclass(obj) and name in {f.name for f in dataclasses.fields(obj)}:
        return getattr(obj, name, None)
    return getattr(obj, name)


class _DriftChecker(ast.NodeVisitor):
    """Resolves the nbtoolkit names a notebook imports, the attributes it reads from nbtoolkit modules and
    classes, and the keyword arguments it passes to nbtoolkit callables; records those that do not exist."""

    def __init__(self, notebook: str):
        self.notebook = notebook
        self.names: dict[str, object] = {}  # local name -> nbtoolkit module or object
        self.problems: list[str] = []
        self.cell = 0

    def _problem(self, node, text: str) -> None:
        problem = f"{self.notebook} cell {self.cell} line {node.lineno}: {text}"
        if problem not in self.problems:
            self.problems.append(problem)

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] != "nbtoolkit":
                continue
            try:
                module = importlib.import_module(alias.name)
            except ImportError as error:
                self._problem(node, f"import {alias.name}: {error}")
                continue
            if alias.asname:
                self.names[alias.asname] = module
            else:
                self.names["nbtoolkit"] = importlib.import_module("nbtoolkit")

    def visit_ImportFrom(self, node):
        if node.level or not node.module or node.module.split(".")[0] != "nbtoolkit":
            return
        try:
            module = importlib.import_module(node.module)
        except ImportError as error:
            self._problem(node, f"from {node.module} import ...: {error}")
            return
        for alias in node.names:
            if alias.name == "*":
                continue
            try:
                self.names[alias.asname or alias.name] = _attribute(module, alias.name)
            except AttributeError:
                self._problem(node, f"from {node.module} import {alias.name}: no such name")

    def _resolve(self, node):
        """The nbtoolkit object an expression names (Name or Attribute chain), None when it is not one."""
        if isinstance(node, ast.Name):
            return self.names.get(node.id)
        if isinstance(node, ast.Attribute):
            owner = self._resolve(node.value)
            if owner is None or not (inspect.ismodule(owner) or inspect.isclass(owner)) or not _is_nbtoolkit(owner):
                return None
            try:
                return _attribute(owner, node.attr)
            except AttributeError:
                self._problem(node, f"{ast.unparse(node)}: {getattr(owner, '__name__', owner)!s} has no "
                                    f"attribute {node.attr!r}")
                return None
        return None

    def visit_Attribute(self, node):
        self._resolve(node)
        base = node.value
        while isinstance(base, ast.Attribute):
            base = base.value
        if not isinstance(base, ast.Name):
            self.visit(base)  # e.g. nbt.tiny_model().model: the call inside still gets checked

    def visit_Call(self, node):
        target = self._resolve(node.func)
        if target is not None and callable(target) and _is_nbtoolkit(target):
            try:
                parameters = list(inspect.signature(target).parameters.values())
            except (TypeError, ValueError):
                parameters = None
            if parameters is not None and not any(p.kind is p.VAR_KEYWORD for p in parameters):
                known = {p.name for p in parameters if p.kind is not p.POSITIONAL_ONLY}
                for keyword in node.keywords:
                    if keyword.arg is not None and keyword.arg not in known:
                        self._problem(node, f"{ast.unparse(node.func)}() has no parameter {keyword.arg!r}")
        self.generic_visit(node)


def _drift(path: Path) -> list[str]:
    checker = _DriftChecker(path.name)
    for index, cell in enumerate(_read(path).cells):
        if cell.cell_type != "code":
            continue
        checker.cell = index
        try:
            tree = ast.parse(_code(cell))
        except SyntaxError as error:
            checker.problems.append(f"{path.name} cell {index} line {error.lineno}: syntax error: {error.msg}")
            continue
        checker.visit(tree)
    return checker.problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_calls_only_nbtoolkit_names_that_exist(path):
    assert _drift(path) == []


def test_the_drift_check_catches_a_missing_name(tmp_path):
    source = (
        "import nbtoolkit as nbt\nfrom nbtoolkit.data import ColumnMapping, no_such_function\n"
        "from nbtoolkit.models import tiny_model\n"
        "nbt.PrepareConfig(split='none', no_such_option=1)\nnbt.prepare_datasett\n"
        "nbt.SFTLoraConfig.for_platform('local')\nnbt.SFTLoraConfig.no_such_classmethod()\n"
        "ColumnMapping(question='q', answer='a')\nx = tiny_model().model.anything  # instances are not checked\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    path = tmp_path / "drift.ipynb"
    nbformat.write(notebook, path)
    problems = "\n".join(_drift(path))
    assert "no_such_function" in problems
    assert "'no_such_option'" in problems
    assert "'prepare_datasett'" in problems
    assert "'no_such_classmethod'" in problems
    assert len(_drift(path)) == 4, problems


# ---------------------------------------------------------------- execution


def _limit(path: Path) -> int:
    return TIMEOUT.get(path.stem, TIMEOUT["default"])


@pytest.fixture(scope="module")
def this_python_kernel(tmp_path_factory):
    """JUPYTER_PATH with a `python3` kernelspec running this interpreter, so a user-level python3 kernel
    from another environment cannot shadow the project's."""
    root = tmp_path_factory.mktemp("jupyter-path")
    write_kernelspec(root)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_PATH", str(root))
        yield root


@pytest.fixture(scope="module")
def shared_workdir(tmp_path_factory):
    """One workdir for the notebooks in order, as a person runs them: each reuses what the earlier ones wrote."""
    return tmp_path_factory.mktemp("notebooks")


def _execute(path: Path, cwd: Path, **parameters) -> nbformat.NotebookNode:
    import papermill

    output = cwd / f"executed-{path.name}"
    try:
        papermill.execute_notebook(
            str(path), str(output), parameters={"profile": "tiny", "workdir": str(cwd / "runs"), **parameters},
            cwd=str(cwd), kernel_name="python3", progress_bar=False, execution_timeout=_limit(path),
        )
    except papermill.PapermillExecutionError as error:
        pytest.fail(f"{path.name} failed in cell {error.cell_index}: {error.ename}: {error.evalue}", pytrace=False)
    executed = nbformat.read(output, as_version=4)
    errors = [(i, o.get("ename")) for i, c in enumerate(executed.cells) if c.cell_type == "code"
              for o in c.outputs if o.output_type == "error"]
    assert errors == []
    unrun = [i for i, c in enumerate(executed.cells)
             if c.cell_type == "code" and c.source.strip() and c.execution_count is None]
    assert unrun == [], f"cells {unrun} did not run"
    return executed


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.timeout(_limit(p) + 60), id=p.name) for p in NOTEBOOKS])
def test_notebook_runs_in_the_tiny_profile(path, shared_workdir, this_python_kernel):
    _execute(path, shared_workdir)


@pytest.mark.parametrize(
    "path", [pytest.param(p, marks=pytest.mark.timeout(_limit(p) + 60), id=p.name)
             for p in NOTEBOOKS if p.stem in STANDALONE])
def test_notebook_runs_standalone_in_an_empty_workdir(path, tmp_path, this_python_kernel):
    """The end of the chain builds every missing earlier output itself (data, baseline, SFT, RFT)."""
    _execute(path, tmp_path, **({"example": False} if path.stem == "05_compare_stages" else {}))


def test_notebook_05_opens_on_the_example_run_when_the_workdir_has_none(tmp_path, this_python_kernel, monkeypatch):
    """No evaluated stage yet: 05 shows a packed example run (labelled) instead of training first."""
    from nbtoolkit.examples import EXAMPLE_DIR_ENV, pack_example_run
    from nbtoolkit.workspace import Workspace
    from test_ui_results import fake_result, record_evals

    source = Workspace(tmp_path / "source", profile="tiny", log=lambda message: None)
    record_evals(source, tmp_path / "jobs", {"baseline": fake_result(["HQ"] * 6),
                                             "sft": fake_result(["HQ", "LQ_EDIT", "LQ_CLOSE", "HQ", "HQ", "LQ_EDIT"])})
    monkeypatch.setenv(EXAMPLE_DIR_ENV, str(pack_example_run(tmp_path / "source", tmp_path / "example",
                                                             description="a test run")))
    notebook = NOTEBOOKS[[p.stem for p in NOTEBOOKS].index("05_compare_stages")]
    (tmp_path / "empty").mkdir()
    executed = _execute(notebook, tmp_path / "empty")
    text = json.dumps([c.outputs for c in executed.cells if c.cell_type == "code"])
    assert "bundled EXAMPLE run" in text and "sft (example)" in text
    assert not (tmp_path / "empty" / "runs" / "jobs").exists()  # nothing was trained
