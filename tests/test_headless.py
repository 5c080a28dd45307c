"""Where no widget renders (papermill or jupyter-scheduler runs, a plain terminal, an editor without the widget
manager), progress and every form or result still read as text or HTML in the saved outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from jupyter_for_tests import write_kernelspec

TESTS = Path(__file__).resolve().parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"

CELLS = [
    # A job waited on with the default (widget) bar, then with NBTOOLKIT_PROGRESS=text.
    """import os
from nbtoolkit.runtime import JobSpec, LocalRuntime
from nbtoolkit.training.config import SFTLoraConfig
runtime = LocalRuntime("runs", env={"PYTHONPATH": TESTS})
def count(name):
    config = SFTLoraConfig.for_platform("local", max_steps=5, warmup_steps=1, save_steps=1)
    return runtime.launch(JobSpec("jobs_for_tests:count", config=config, name=name, extra={"sleep": 0.02}))
result = count("widget-bar").wait(poll=0.1, timeout=120)""",
    """os.environ["NBTOOLKIT_PROGRESS"] = "text"
count("text-bar").wait(poll=0.1, timeout=120)""",
    "result",
    """from nbtoolkit.ui import HyperparameterForm
HyperparameterForm()""",
]


def _texts(cell) -> str:
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            parts += [output.data.get("text/plain", ""), output.data.get("text/html", "")]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    import papermill

    work = tmp_path_factory.mktemp("headless")
    jupyter = work / "jupyter"
    write_kernelspec(jupyter)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"TESTS = {str(TESTS)!r}")]
                                        + [nbformat.v4.new_code_cell(source) for source in CELLS])
    nbformat.write(notebook, work / "headless.ipynb")
    env = {"JUPYTER_PATH": str(jupyter), "NBTOOLKIT_PROGRESS": ""}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        papermill.execute_notebook(str(work / "headless.ipynb"), str(work / "out.ipynb"), cwd=str(work),
                                   kernel_name="python3", progress_bar=False, execution_timeout=240)
    return nbformat.read(work / "out.ipynb", as_version=4).cells[1:]


def test_a_widget_progress_bar_leaves_its_final_state_as_text(executed):
    wait = executed[0]
    assert any(WIDGET_MIME in output.get("data", {}) for output in wait.outputs), "expected the notebook bar"
    text = _texts(wait)
    assert "widget-bar train" in text and "5/5" in text and "loss=" in text


def test_text_progress_needs_no_widget(executed):
    wait = executed[1]
    assert not any(WIDGET_MIME in output.get("data", {}) for output in wait.outputs)
    assert "text-bar train" in _texts(wait) and "5/5" in _texts(wait)


def test_results_and_forms_read_without_widgets(executed):
    result, form = executed[2], executed[3]
    assert "COMPLETED" in _texts(result)
    form_data = form.outputs[0].data
    assert form_data["text/plain"].startswith("HyperparameterForm(")
    assert "nbt-fallback" in form_data["text/html"], "a frontend without widgets shows the HTML fallback"


@pytest.mark.parametrize("name", ["HyperparameterForm", "ColumnMappingForm", "MixForm"])
def test_every_form_has_a_text_and_an_html_representation(name):
    import nbtoolkit.ui

    form = getattr(nbtoolkit.ui, name)()
    bundle = form._repr_mimebundle_()
    assert bundle["text/plain"].startswith(f"{name}(") and " object at 0x" not in bundle["text/plain"]
    assert WIDGET_MIME in bundle and "nbt-fallback" in bundle["text/html"]
