"""A real browser: JupyterLab served on 127.0.0.1, Debian's chromium driven by Playwright, the notebooks run
with Lab's own "Run All Cells" and the nbtoolkit widgets used as a person would.

Needs /usr/bin/chromium and the playwright package (scripts/browser_deps.sh installs both, `make test` runs it).
Screenshots go to test-artifacts/browser/. Select or skip these tests with `-m browser` / `-m "not browser"`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from jupyter_for_tests import write_kernelspec

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts" / "browser"
CHROMIUM = Path(os.environ.get("NBTOOLKIT_CHROMIUM", "/usr/bin/chromium"))
# As root on a machine without network: no sandbox, no GPU, and no background connections to Google's hosts.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run",
                  "--disable-dev-shm-usage"]
# Generous: a shared 2-core machine, a cold Lab build cache and first kernel imports of torch and pandas.
SERVER_START_S = 180
PAGE_S = 180
RUN_ALL_S = 600
UPDATE_S = 90

pytestmark = [pytest.mark.browser, pytest.mark.timeout(1200)]


def _unavailable(reason: str) -> None:
    """Missing browser pieces fail in CI (where scripts/browser_deps.sh must have installed them), else skip."""
    message = f"{reason}: run `bash scripts/browser_deps.sh` (make test does)"
    if os.environ.get("CI"):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tiny_copy(source: Path, target: Path, workdir: Path) -> None:
    """The notebook with papermill's injected parameters (tiny profile, a temporary workdir), as Lab opens it."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    notebook = load_notebook_node(str(source))
    notebook = parameterize_notebook(notebook, {"profile": "tiny", "workdir": str(workdir)})
    nbformat.write(notebook, target)


def _die_with_parent() -> None:
    """In the server's child process: SIGTERM when pytest dies, whatever kills it (kernels then notice too)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _scratch(target: Path, *sources: str) -> None:
    cells = [nbformat.v4.new_code_cell(source) for source in sources]
    notebook = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}})
    nbformat.write(notebook, target)


class Lab:
    """A JupyterLab server in its own process group, isolated from the user's Jupyter config and settings."""

    def __init__(self, root: Path):
        self.root = root
        self.notebooks = root / "notebooks"
        self.notebooks.mkdir()
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "lab.log"
        self.process: subprocess.Popen | None = None

    def _settings(self) -> Path:
        settings = self.root / "settings"
        overrides = {
            # No news or update checks (no network here), and no popup over the notebook.
            "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
                {"fetchNews": "false", "checkForUpdates": False, "doNotDisturbMode": True},
            # Every cell stays in the DOM, so the widgets below the fold can be found.
            "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
        }
        for name, value in overrides.items():
            path = settings / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value))
        return settings

    def start(self) -> None:
        write_kernelspec(self.root / "jupyter-path")
        env = {
            **os.environ,
            "JUPYTER_PATH": str(self.root / "jupyter-path"),
            "JUPYTER_CONFIG_DIR": str(self.root / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            "IPYTHONDIR": str(self.root / "ipython"),
        }
        command = [
            sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--port-retries=0",
            f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.notebooks}",
            "--LabApp.expose_app_in_browser=True", "--LabApp.extension_manager=readonly",
            f"--LabApp.user_settings_dir={self._settings()}", f"--LabApp.workspaces_dir={self.root / 'workspaces'}",
            "--ServerApp.terminals_enabled=False",
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(command, env=env, cwd=self.notebooks, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + SERVER_START_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5) as response:
                    if response.status == 200:
                        return
            time.sleep(1)
        raise RuntimeError(f"jupyter lab did not answer within {SERVER_START_S} s:\n{self.log_tail()}")

    def api(self, path: str):
        with urllib.request.urlopen(f"{self.url}/api/{path}?token={self.token}", timeout=10) as response:
            return json.loads(response.read())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Shut the server and its kernels down (kernels run in their own sessions, so each is ended by pid)."""
        if self.process is None:
            return
        import psutil

        try:
            kernels = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            kernels = []
        with contextlib.suppress(OSError):
            request = urllib.request.Request(f"{self.url}/api/shutdown?token={self.token}", method="POST")
            urllib.request.urlopen(request, timeout=10).close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        _, alive = psutil.wait_procs(kernels, timeout=10)
        for process in alive:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
        self.process = None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (Debian package chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        _unavailable("the playwright package is missing")
    shutil.rmtree(ARTIFACTS, ignore_errors=True)  # screenshots of this run only
    server = Lab(tmp_path_factory.mktemp("lab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(lab, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000}, timeout=PAGE_S * 1000)
        context.set_default_timeout(PAGE_S * 1000)
        try:
            yield context
        finally:
            context.close()


class Notebook:
    """One notebook open in Lab, run with the Run menu's "Run All Cells"."""

    _STATE = """path => {
        const app = window.jupyterapp;
        if (!app) { return null; }
        const panel = Array.from(app.shell.widgets('main')).find(w => w.context && w.context.path === path);
        if (!panel || !panel.context.isReady || !panel.sessionContext.session) { return null; }
        const kernel = panel.sessionContext.session.kernel;
        const cells = [];
        for (let i = 0; i < panel.model.cells.length; i++) {
            const cell = panel.model.cells.get(i);
            if (cell.type !== 'code') { continue; }
            const errors = cell.outputs.toJSON().filter(o => o.output_type === 'error')
                .map(o => `${o.ename}: ${o.evalue}`);
            cells.push({index: i, count: cell.executionCount, empty: cell.sharedModel.getSource().trim() === '',
                        errors: errors});
        }
        return {kernel: kernel ? kernel.status : 'none', cells: cells};
    }"""

    def __init__(self, lab: Lab, context, name: str):
        self.lab, self.name = lab, name
        self.page = context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))

    def state(self) -> dict | None:
        return self.page.evaluate(self._STATE, self.name)

    def wait_until(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.5)
        self.screenshot("timeout")
        raise AssertionError(f"{self.name}: {what} within {timeout:.0f} s; last state {self.state()}\n"
                             f"console: {self.console[-10:]}\nserver log:\n{self.lab.log_tail()}")

    def open(self) -> None:
        # reset: a fresh workspace, so Lab does not reopen (and start kernels for) earlier tests' notebooks.
        self.page.goto(f"{self.lab.url}/lab/tree/{self.name}?reset&token={self.lab.token}")
        self.wait_until(lambda: (s := self.state()) and s["kernel"] == "idle", PAGE_S, "the kernel is not idle")

    def run_all(self) -> dict:
        self.page.locator(".lm-MenuBar-item", has_text="Run").first.click()
        label = self.page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$"))
        self.page.locator(".lm-Menu-item", has=label).click()

        def finished():
            state = self.state()
            if state is None:
                return None
            errors = [(c["index"], e) for c in state["cells"] for e in c["errors"]]
            if errors:
                self.screenshot("error")
                raise AssertionError(f"{self.name}: cell errors in the browser run: {errors}")
            done = all(c["count"] is not None for c in state["cells"] if not c["empty"])
            return state if done and state["kernel"] == "idle" else None

        return self.wait_until(finished, RUN_ALL_S, "Run All Cells did not finish")

    def widget_problems(self) -> list[str]:
        """What is wrong with the widget outputs: none at all, an empty view, or "Error displaying widget"."""
        # A widget view is an output area child without a data-mime-type (text, HTML and images have one).
        views = self.page.locator(".jp-OutputArea-output:not([data-mime-type])")
        if views.count() == 0:
            return ["no widget output at all"]
        problems = [views.nth(i).inner_text() for i in range(views.count())
                    if re.search(r"Error displaying widget|Failed to load model class", views.nth(i).inner_text())]
        problems += [f"widget output {i} holds no view" for i in range(views.count())
                     if views.nth(i).locator(".jupyter-widgets").count() == 0]
        return problems

    def screenshot(self, label: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{Path(self.name).stem}-{label}.png"
        with contextlib.suppress(Exception):
            self.page.screenshot(path=str(path))
        return path

    def close(self) -> None:
        """Shut the kernel down from the page, then close it."""
        with contextlib.suppress(Exception):
            self.page.evaluate("""path => {
                const panel = Array.from(window.jupyterapp.shell.widgets('main'))
                    .find(w => w.context && w.context.path === path);
                return panel ? panel.sessionContext.shutdown() : null;
            }""", self.name)
        self.page.close()


@contextlib.contextmanager
def opened(lab: Lab, context, name: str):
    notebook = Notebook(lab, context, name)
    try:
        notebook.open()
        yield notebook
    except BaseException:
        notebook.screenshot("failure")
        raise
    finally:
        notebook.close()
    deadline = time.monotonic() + 60
    while lab.api("kernels") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lab.api("kernels") == [], "a kernel outlived its notebook page"


def _html(locator) -> str:
    """The element's outer HTML: an <img> chart changes only in its src."""
    return locator.evaluate("element => element.outerHTML")


def _changes(notebook: Notebook, locator, before: str, what: str) -> str:
    """Waits until the element's outer HTML differs from `before`, returns the new HTML."""
    return notebook.wait_until(lambda: (html := _html(locator)) != before and html, UPDATE_S, f"{what} did not change")


def _drag(page, slider, fraction: float) -> None:
    """Drags an ipywidgets slider's handle to `fraction` of its track, with the mouse."""
    track = slider.locator(".noUi-base").first.bounding_box()
    handle = slider.locator(".noUi-handle").first.bounding_box()
    assert track and handle, "the slider has no visible track or handle"
    page.mouse.move(handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2)
    page.mouse.down()
    page.mouse.move(track["x"] + track["width"] * fraction, track["y"] + track["height"] / 2, steps=12)
    page.mouse.up()


def test_environment_check_widget_renders_and_round_trips(lab, browser):
    _tiny_copy(REPO / "notebooks" / "00_environment_check.ipynb", lab.notebooks / "00_environment_check.ipynb",
               lab.root / "runs")
    with opened(lab, browser, "00_environment_check.ipynb") as notebook:
        notebook.run_all()
        slider = notebook.page.locator(".nbt-env-slider")
        slider.wait_for(state="visible")
        assert notebook.widget_problems() == []
        echo = notebook.page.locator(".nbt-env-echo")
        # The notebook's own kernel-side check set 7; the view follows the kernel.
        assert "received 7" in echo.inner_text()
        slider.scroll_into_view_if_needed()
        _drag(notebook.page, slider, 0.2)
        moved = slider.locator(".widget-readout").inner_text().strip()
        assert moved not in ("", "7"), f"the slider did not move: {moved!r}"
        # The kernel's observer rewrites the line with the value it received from the browser.
        notebook.wait_until(lambda: f"received {moved}" in echo.inner_text(), UPDATE_S,
                            f"the kernel did not echo the slider's {moved}")
        notebook.screenshot("test-widget")


def test_a_widget_that_cannot_render_is_caught(lab, browser):
    """The check above can fail: a view of a model the kernel never created shows "Error displaying widget"."""
    _scratch(lab.notebooks / "broken_widget.ipynb", "from IPython.display import display\n"
             "display({'application/vnd.jupyter.widget-view+json': {'model_id': 'no-such-model', "
             "'version_major': 2, 'version_minor': 0}, 'text/plain': 'IntSlider()'}, raw=True)")
    with opened(lab, browser, "broken_widget.ipynb") as notebook:
        notebook.run_all()
        # The view is empty until the front end gives up looking for the model, then it says so.
        notebook.wait_until(lambda: any("Error displaying widget" in p for p in notebook.widget_problems()),
                            UPDATE_S, "the broken widget was not reported")


def test_mapping_form_in_notebook_01_previews_a_changed_column(lab, browser):
    _tiny_copy(REPO / "notebooks" / "01_prepare_data.ipynb", lab.notebooks / "01_prepare_data.ipynb",
               lab.root / "runs")
    with opened(lab, browser, "01_prepare_data.ipynb") as notebook:
        notebook.run_all()
        form = notebook.page.locator(".nbt-mapping-form").first
        form.wait_for(state="visible")
        assert notebook.widget_problems() == []
        preview = form.locator(".nbt-preview")
        assert preview.inner_text().strip(), "the preview is empty before any change"
        before = _html(preview)
        form.scroll_into_view_if_needed()
        notebook.screenshot("mapping-form")

        # A column no field uses yet, so the new mapping is valid and the preview shows a different text.
        used = {text.strip() for text in form.locator(".nbt-field select option:checked").all_inner_texts()}
        used |= {text.strip() for text in form.locator(".jupyter-widget-tag").all_inner_texts()}
        select = form.locator(".nbt-field-question select")
        labels = [label.strip() for label in select.locator("option").all_inner_texts()]
        # The dropdown's "no column" entry is a dash; column names are words.
        other = next((label for label in labels if re.search(r"\w", label) and label not in used), None)
        assert other, f"no unused column to pick among {labels} (used: {sorted(used)})"
        select.select_option(label=other)
        after = _changes(notebook, preview, before, f"the preview after choosing question = {other!r}")
        assert "nbt-msg-error" not in after and form.locator(".nbt-msg-error").count() == 0, (
            f"question = {other!r} gave an error: {form.locator('.nbt-msg-error').all_inner_texts()}")
        assert notebook.widget_problems() == []
        form.locator(".nbt-field-question").scroll_into_view_if_needed()
        notebook.screenshot("mapping-form-changed")


def test_mix_form_slider_updates_the_share_chart(lab, browser):
    # A scratch notebook keeps this cheap: notebook 07's own cells (training on the mix) run in test_notebooks.
    _scratch(lab.notebooks / "mix_form.ipynb", "from nbtoolkit.ui import MixForm\n\nform = MixForm()\nform")
    with opened(lab, browser, "mix_form.ipynb") as notebook:
        notebook.run_all()
        form = notebook.page.locator(".nbt-mix-form").first
        form.wait_for(state="visible")
        assert notebook.widget_problems() == []
        slider = form.locator(".nbt-mix-customer").first
        chart = form.locator(".nbt-mix-chart").first
        chart.wait_for(state="visible")
        before = _html(chart)
        assert chart.evaluate("e => e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)"), (
            "the share chart holds no image")
        notebook.screenshot("mix-form")

        handle = slider.locator(".noUi-handle").first
        low, high, now = (float(handle.get_attribute(f"aria-value{key}")) for key in ("min", "max", "now"))
        # The typed box beside the slider shows its value (and refuses values out of range instead of clamping).
        box = form.locator(".nbt-mix-customer-box input").first
        readout = box.input_value()
        slider.scroll_into_view_if_needed()
        _drag(notebook.page, slider, 0.8 if (now - low) / (high - low) < 0.5 else 0.2)
        notebook.wait_until(lambda: box.input_value() != readout, UPDATE_S, "the customer slider did not move")
        _changes(notebook, chart, before, "the share chart after moving the customer slider")
        notebook.wait_until(lambda: chart.evaluate("e => e.tagName !== 'IMG' || (e.complete && e.naturalWidth > 0)"),
                            UPDATE_S, "the new share chart did not load")
        assert notebook.widget_problems() == []
        notebook.screenshot("mix-form-moved")
        moved = box.input_value()
        box.fill("150")
        box.press("Enter")
        status = form.locator(".nbt-mix-status").first
        notebook.wait_until(lambda: "between 0 and 100" in status.inner_text(), UPDATE_S,
                            "typing 150 in the customer box was not refused with a message")
        assert box.input_value() == moved
        notebook.screenshot("mix-form-refused-150")


# Layout checks run in the page on every nbtoolkit form: what a person sees cut off, scrolled sideways or unreadable.
_LAYOUT_PROBLEMS = """root => {
    const problems = [];
    const visible = e => e.offsetParent !== null && e.getClientRects().length > 0;
    const name = e => (e.className && typeof e.className === 'string' ? e.className.split(' ').slice(0, 3).join('.')
                       : e.tagName) + ' "' + (e.innerText || e.value || e.getAttribute('title') || '')
                       .trim().slice(0, 40) + '"';
    // 1. Horizontal overflow: a box (or the form itself) wider inside than outside shows a sideways scrollbar.
    for (const e of [root, ...root.querySelectorAll('*')]) {
        if (!visible(e) || ['INPUT', 'TEXTAREA', 'SELECT', 'PRE', 'CODE'].includes(e.tagName)) { continue; }
        const style = getComputedStyle(e);
        if (['auto', 'scroll'].includes(style.overflowX) && e.scrollWidth > e.clientWidth + 1) {
            problems.push(`horizontal scrollbar on ${name(e)} (${e.scrollWidth} > ${e.clientWidth})`);
        }
    }
    const area = root.closest('.jp-OutputArea-output');
    if (area && area.scrollWidth > area.clientWidth + 1) {
        problems.push(`the output area scrolls sideways (${area.scrollWidth} > ${area.clientWidth})`);
    }
    // 2. Truncated labels, buttons and inputs (text wider than its box, shown with an ellipsis or cut).
    const canvas = document.createElement('canvas').getContext('2d');
    for (const e of root.querySelectorAll('.widget-label, label, button, input[type=text], textarea, select')) {
        if (!visible(e)) { continue; }
        if (e.tagName === 'SELECT') {
            const option = e.options[e.selectedIndex];
            if (!option || !option.text.trim()) { problems.push(`dropdown shows nothing: ${name(e.parentElement)}`);
                                                  continue; }
            const style = getComputedStyle(e);
            canvas.font = `${style.fontWeight} ${style.fontSize} ${style.fontFamily}`;
            // The arrow takes about 20px on the right.
            if (canvas.measureText(option.text).width > e.clientWidth - 20) {
                problems.push(`dropdown text cut: "${option.text}" in ${e.clientWidth}px`);
            }
        } else if (e.scrollWidth > e.clientWidth + 1) {
            problems.push(`truncated ${name(e)} (${e.scrollWidth} > ${e.clientWidth})`);
        } else if (e.tagName === 'TEXTAREA' && e.value && e.scrollHeight > e.clientHeight + 1
                   && e.value.split(/\\n/).length < 4) {  // a short list hidden below its box (longer texts scroll)
            problems.push(`text below the box in ${name(e)} (${e.scrollHeight} > ${e.clientHeight})`);
        }
    }
    // 3. Contrast: text against the colour behind it (WCAG's ratio; 3 is the minimum for large or bold text).
    const rgba = text => { const m = text.match(/[\\d.]+/g).map(Number); return m.length > 3 ? m : [...m, 1]; };
    const background = e => {
        for (let node = e; node; node = node.parentElement) {
            const colour = rgba(getComputedStyle(node).backgroundColor);
            if (colour[3] > 0.5) { return colour; }
        }
        return rgba(getComputedStyle(document.body).backgroundColor);
    };
    const luminance = ([r, g, b]) => [r, g, b].map(v => v / 255)
        .map(v => v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4)
        .reduce((sum, v, i) => sum + v * [0.2126, 0.7152, 0.0722][i], 0);
    for (const e of root.querySelectorAll('*')) {
        const own = Array.from(e.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
        if (!visible(e) || !(own || ['INPUT', 'TEXTAREA', 'SELECT'].includes(e.tagName))) { continue; }
        if (['INPUT', 'TEXTAREA'].includes(e.tagName) && !e.value) { continue; }
        const back = background(e);
        let fore = rgba(getComputedStyle(e).color);
        fore = [0, 1, 2].map(i => fore[i] * fore[3] + back[i] * (1 - fore[3]));  // translucent text
        const [light, dark] = [luminance(fore), luminance(back)].sort((a, b) => b - a);
        const ratio = (light + 0.05) / (dark + 0.05);
        if (ratio < 3) { problems.push(`low contrast ${ratio.toFixed(2)} on ${name(e)}`); }
    }
    // 4. Figures: a PNG is never stretched beyond its own pixels (blurry), and no figure fills the whole screen.
    for (const img of root.querySelectorAll('img')) {
        if (!visible(img)) { continue; }
        const vector = img.src.startsWith('data:image/svg') || img.src.includes('svg');
        if (!vector && img.naturalWidth && img.clientWidth > img.naturalWidth * 1.05) {
            problems.push(`blurry image: ${img.naturalWidth}px drawn at ${img.clientWidth}px`);
        }
        if (img.clientWidth > 760) { problems.push(`image ${img.clientWidth}px wide fills the screen`); }
    }
    return problems;
}"""

_FORMS_NOTEBOOK = (
    "import sys\nsys.path.insert(0, {tests!r})\n"
    "import nbtoolkit as nbt\nfrom nbtoolkit.ui import ColumnMappingForm, HyperparameterForm, MixForm, ResultsView\n"
    "from test_ui_results import fake_result\n"
    "frame = nbt.make_stackoverflow_dataset(60, seed=0)\n"
    "frame.loc[frame.index[3], 'Body'] = 'User: a reserved string'\n"
    "mapping = ColumnMappingForm(frame, out_dir='prepared')\n"
    "mapping.reserved.value = 'reject'\nmapping.show_problems.value = True\n"
    "def open_sections(form):  # every accordion open, so what it holds is checked too\n"
    "    for child in form.widget.children:\n"
    "        if type(child).__name__ == 'Accordion':\n"
    "            child.selected_index = 0\n"
    "open_sections(mapping)\nmapping",
    "sft = HyperparameterForm('sft_lora', monitor=False, max_steps=60, lora_r=32)\n"
    "open_sections(sft)\nsft.set(lr=5e-4)\nsft",
    "rft = HyperparameterForm('rft_lora', monitor=False)\nrft",
    "mix = MixForm()\nmix",
    "verbose = 'I think this question is HQ because it shows research and code'\n"
    "view = ResultsView({{'baseline': fake_result([verbose] * 6), 'sft': fake_result(['HQ', 'LQ_EDIT', 'HQ', 'HQ', "
    "'LQ_CLOSE', 'LQ_CLOSE']), 'rft': fake_result(['HQ', 'LQ_EDIT', 'LQ_CLOSE', 'HQ', 'LQ_CLOSE', 'LQ_CLOSE'])}})\n"
    "view.widget.selected_index = 1\nview",
    "from nbtoolkit.ui import SampleExplorer\nexplorer = SampleExplorer(view.results)\n"
    "explorer.widget.add_class('nbt-test-explorer')\nexplorer",
)
FORMS = (".nbt-mapping-form", ".nbt-hp-sft_lora", ".nbt-hp-rft_lora", ".nbt-mix-form", ".nbt-results-view",
         ".nbt-test-explorer")


def _layout_problems(notebook: Notebook) -> dict[str, list[str]]:
    found = {}
    for css in FORMS:
        form = notebook.page.locator(css).first
        form.wait_for(state="visible")
        problems = form.evaluate(_LAYOUT_PROBLEMS)
        if problems:
            found[css] = problems
    return found


def _set_theme(notebook: Notebook, theme: str) -> None:
    notebook.page.evaluate("theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
    notebook.wait_until(lambda: notebook.page.evaluate(
        "theme => document.body.dataset.jpThemeName === theme", theme), UPDATE_S, f"the theme did not become {theme}")
    notebook.page.wait_for_timeout(1500)  # the theme's stylesheet applies after the attribute


def test_forms_fit_and_read_well_in_light_and_dark_themes(lab, browser):
    """Every form in both themes: no sideways scrollbar, no cut label or input, no blank dropdown, readable text,
    crisp charts of a sensible size (the screenshots are kept to look at)."""
    _scratch(lab.notebooks / "forms.ipynb",
             *(cell.format(tests=str(REPO / "tests")) for cell in _FORMS_NOTEBOOK))
    with opened(lab, browser, "forms.ipynb") as notebook:
        notebook.run_all()
        assert notebook.widget_problems() == []
        found = {}
        for theme in ("JupyterLab Light", "JupyterLab Dark"):
            _set_theme(notebook, theme)
            label = theme.split()[-1].lower()
            for css in FORMS:
                form = notebook.page.locator(css).first
                form.scroll_into_view_if_needed()
                with contextlib.suppress(Exception):
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    form.screenshot(path=str(ARTIFACTS / f"forms-{label}-{css.strip('.')}.png"))
            found.update({f"{label} {css}": problems for css, problems in _layout_problems(notebook).items()})
        assert found == {}, json.dumps(found, indent=1)
