"""HyperparameterForm: one field per config field, both default sets side by side, inline warnings, dry run, launch."""

from __future__ import annotations

import dataclasses
import html
import json
from typing import Any

from nbtoolkit.advisor import advise_launch
from nbtoolkit.errors import NbtoolkitError, unknown_name_message
from nbtoolkit.training.config import CONFIGS, PLATFORMS, MethodConfig
from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import add_classes, message_html, widgets

PLATFORM_TITLES = {"local": "local: calibrated for the embedded 135M model on a CPU",
                   "nova": "Nova: Amazon Nova on SageMaker (its published bounds, docs/hyperparameters.md)"}
_STYLE = """<style>
.nbt-hp-form .nbt-invalid input, .nbt-hp-form .nbt-invalid select { border: 2px solid #cf222e !important; }
.nbt-hp-form .nbt-warned input { border: 2px solid #d4a72c !important; }
.nbt-hp-form .nbt-changed input, .nbt-hp-form .nbt-changed select { background: #fff8c5 !important; }
</style>"""
JOB_FIELDS = ("name", "model", "train_file", "eval_file", "labels")


def _kind(field: dataclasses.Field, rule: Any) -> str:
    """How a config field is edited: choice, bool, int, float, tuple, optional or text."""
    if _kind_of_rule(rule) == "choice":
        return "choice"
    annotation = str(field.type).replace(" ", "")
    return {"bool": "bool", "int": "int", "float": "float", "tuple[str,...]": "tuple",
            "str|None": "optional"}.get(annotation, "text")


def _shown(value: Any) -> str:
    if isinstance(value, tuple | list):
        return ", ".join(map(str, value))
    if isinstance(value, float):
        return f"{value:g}"
    return "None" if value is None else str(value)


def _default_cell(value: Any, style: str) -> str:
    """A default as a short cell; a long one (target_modules) is cut, whole in its tooltip."""
    text = _shown(value)
    short = text if len(text) <= 12 else f"{len(value)} items" if isinstance(value, tuple | list) else text[:11] + "…"
    return f"<span style='{style}' title='{html.escape(text)}'>{html.escape(short)}</span>"


def _bounds_text(rule: Any) -> str:
    if rule is None:
        return ""
    if _kind_of_rule(rule) == "choice":
        return "{" + ", ".join(map(str, rule)) + "}"
    return f"{_shown(rule[0])} .. {_shown(rule[1])}"


def _kind_of_rule(rule: Any) -> str:
    """Bounds are (low, high) tuples; allowed values are training.config's tuple subclass from choices()."""
    return "choice" if isinstance(rule, tuple) and type(rule) is not tuple else "range"


class HyperparameterForm(WidgetView):
    """Edit one method's hyperparameters and launch its job.

    Fields come from the config dataclass (help text as tooltips, the active platform's bounds checked on every
    change); the local and Nova defaults stand side by side. Out-of-bounds values and the advisor's advice show inline
    and are never raised by the form. "Dry run" shows `runtime.launch(spec, dry_run=True)`; "Launch" starts the job
    and a JobMonitor. Headless: `form.value` (the config), `form.spec`, `form.dry_run()`, `form.launch_job()`.
    `runtime` is a LocalRuntime (default: LocalRuntime("runs")) or anything with `launch(spec, dry_run=...)`.
    Children: `platform`, `fields[name]` (also `form.<name>`), `name`, `model`, `train_file`, `eval_file`,
    `labels`, `reset`, `dry_run_button`, `launch`, `messages`, `output`.
    """

    def __init__(self, method: str = "sft_lora", platform: str = "local", runtime: Any = None, spec: Any = None,
                 *, monitor: bool = True, **overrides: Any) -> None:
        w = widgets()
        if method not in CONFIGS:
            raise ValueError(unknown_name_message("method", method, CONFIGS))
        if platform not in PLATFORMS:
            raise ValueError(unknown_name_message("platform", platform, PLATFORMS))
        self.config_class: type[MethodConfig] = CONFIGS[method]
        self.method = method
        self.runtime = runtime
        self.template = spec
        self.show_monitor = monitor
        self.job: Any = None
        self.monitor: Any = None
        self.last_report: Any = None
        self.errors: dict[str, str] = {}
        self.warnings: list[str] = []
        self.fields: dict[str, Any] = {}
        self._cells: dict[str, Any] = {}

        self.platform = w.ToggleButtons(options=[(PLATFORM_TITLES[p].split(":")[0], p) for p in PLATFORMS],
                                        value=platform, description="defaults",
                                        tooltips=[PLATFORM_TITLES[p] for p in PLATFORMS])
        self.platform_info = w.HTML()
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns="minmax(320px, 1.3fr) 80px 80px 120px 2fr",
                                              grid_gap="2px 8px", align_items="center"))
        self.messages = add_classes(w.HTML(), "nbt-warnings")
        self.name = w.Text(description="job name")
        self.model = w.Text(description="model", layout=w.Layout(width="100%"))
        self.train_file = w.Text(description="train_file", layout=w.Layout(width="100%"))
        self.eval_file = w.Text(description="eval_file", layout=w.Layout(width="100%"))
        self.labels = w.Text(description="labels", placeholder="comma-separated")
        if spec is not None:
            self.name.value = spec.name or ""
            self.model.value = spec.model or ""
            self.train_file.value = spec.train_file or ""
            self.eval_file.value = spec.eval_file or ""
            self.labels.value = ", ".join(spec.labels or ())
        self.reset = add_classes(w.Button(description="Reset to defaults", icon="undo"), "nbt-reset")
        self.dry_run_button = add_classes(w.Button(description="Dry run", icon="search",
                                                   tooltip="every check a launch runs; starts nothing"), "nbt-dry-run")
        self.launch = add_classes(w.Button(description="Launch", icon="play", button_style="success"), "nbt-launch")
        self.output = add_classes(w.Output(), "nbt-output")
        job_box = w.VBox([self.name, self.model, self.train_file, self.eval_file, self.labels])
        job_section = w.Accordion(children=[job_box], titles=("Job: model and data",))
        self.widget = add_classes(w.VBox([
            w.HTML(_STYLE + f"<b>{html.escape(self.config_class.__name__)}</b> "
                   f"<span style='color:#57606a'>{html.escape(self.config_class.__doc__ or '')}</span>"),
            self.platform, self.platform_info, self.grid, self.messages, job_section,
            w.HBox([self.reset, self.dry_run_button, self.launch]), self.output,
        ], layout=w.Layout(width="100%")), "nbt-hp-form", f"nbt-hp-{method}")

        self.platform.observe(self._on_platform_change, names="value")
        self.reset.on_click(lambda _: self._build_fields())
        self.dry_run_button.on_click(self._on_dry_run_click)
        self.launch.on_click(self._on_launch_click)

        base = spec.config if spec is not None and spec.config is not None and \
            spec.config.platform == platform and isinstance(spec.config, self.config_class) else None
        self._build_fields(base.to_dict() if base is not None else None)
        if overrides:
            self.set(**overrides)

    def __repr__(self) -> str:
        return f"HyperparameterForm({self.method!r}, platform={self.platform.value!r})"

    def __getattr__(self, name: str) -> Any:
        fields = self.__dict__.get("fields", {})
        if name in fields:
            return fields[name]
        raise AttributeError(f"{type(self).__name__!s} has no attribute {name!r}")

    # -- fields -----------------------------------------------------------------------------------------------

    def _build_fields(self, values: dict[str, Any] | None = None) -> None:
        """(Re)build one row per field with the active platform's defaults (or `values`) and bounds."""
        w = widgets()
        cls, platform = self.config_class, self.platform.value
        defaults = cls.for_platform(platform).to_dict()
        values = {**defaults, **(values or {})}
        head = [w.HTML(f"<b>{t}</b>") for t in ("hyperparameter", "local", "nova", f"{platform} bounds", "help")]
        cells: list[Any] = head
        self.fields, self._cells = {}, {}
        for field in dataclasses.fields(cls):
            if field.name == "platform":
                continue
            name, rule = field.name, cls.BOUNDS.get(platform, {}).get(field.name)
            widget = self._make_input(field, rule, values[name])
            widget.observe(self._on_field_change, names="value")
            add_classes(widget, "nbt-hp-field", f"nbt-hp-{name}")
            self.fields[name] = widget
            local = cls.DEFAULTS.get("local", {}).get(name, field.default)
            nova = cls.DEFAULTS.get("nova", {}).get(name, field.default)
            bold = {p: "font-weight:bold;" if p == platform else "color:#57606a;" for p in PLATFORMS}
            note = w.HTML()
            self._cells[name] = note
            cells += [widget, w.HTML(_default_cell(local, bold["local"])), w.HTML(_default_cell(nova, bold["nova"])),
                      w.HTML(f"<code>{html.escape(_bounds_text(rule))}</code>"), note]
        self.grid.children = cells
        self.platform_info.value = (f"<span style='color:#57606a'>active defaults: <b>"
                                    f"{html.escape(PLATFORM_TITLES[platform])}</b>; highlighted fields differ from "
                                    "them</span>")
        self._check()

    def _make_input(self, field: dataclasses.Field, rule: Any, value: Any) -> Any:
        w = widgets()
        kind = _kind(field, rule)
        common = {"description": field.name, "tooltip": field.metadata.get("help", ""),
                  "style": {"description_width": "130px"}, "layout": w.Layout(width="100%")}
        if kind == "choice":
            options = list(rule) + ([value] if value not in rule else [])
            return w.Dropdown(options=options, value=value, **common)
        if kind == "bool":
            return w.Checkbox(value=bool(value), indent=True, **common)
        if kind == "int":
            return w.IntText(value=int(value), **common)
        if kind == "float":
            return w.FloatText(value=float(value), **common)
        if field.name == "reward":
            from nbtoolkit.rewards import REWARDS

            return w.Combobox(options=list(REWARDS), value=str(value), ensure_option=False, **common)
        return w.Text(value=_shown(value) if kind == "tuple" else ("" if value is None else str(value)), **common)

    def _values(self) -> dict[str, Any]:
        cls, platform = self.config_class, self.platform.value
        values = {}
        for field in dataclasses.fields(cls):
            if field.name not in self.fields:
                continue
            raw = self.fields[field.name].value
            kind = _kind(field, cls.BOUNDS.get(platform, {}).get(field.name))
            if kind == "tuple":
                values[field.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
            elif kind == "optional":
                values[field.name] = raw.strip() or None
            else:
                values[field.name] = raw
        return values

    def set(self, **values: Any) -> HyperparameterForm:
        """Set fields by name (what typing into them does); unknown names get a suggestion."""
        for name, value in values.items():
            if name not in self.fields:
                raise ValueError(unknown_name_message(f"{self.method} hyperparameter", name, self.fields))
            widget = self.fields[name]
            if hasattr(widget, "options") and not hasattr(widget, "ensure_option") and value not in widget.options:
                widget.options = [*widget.options, value]  # shown, and flagged as not allowed
            if isinstance(widget.value, str) and not isinstance(value, str):  # tuple and optional fields
                value = "" if value is None else _shown(value)
            widget.value = value
        return self

    # -- checking ---------------------------------------------------------------------------------------------

    def _check(self) -> MethodConfig | None:
        """Validate the current values; show errors and warnings inline (never raise). Returns the config or None."""
        cls, platform = self.config_class, self.platform.value
        values = self._values()
        errors = dict(cls.bound_problems(platform, values))
        config = None
        if not errors:
            try:
                config = cls(platform=platform, **values)
            except (ValueError, TypeError) as error:
                message = str(error)
                named = [n for n in self.fields if f"{n} (" in message or f"{n}=" in message] or ["(config)"]
                errors.update({n: message for n in named})
        caught_warnings = [a.message for a in advise_launch(config)] if config is not None else []
        self.errors, self.warnings = errors, caught_warnings
        defaults = cls.for_platform(platform).to_dict()
        for name, widget in self.fields.items():
            warned = [m for m in caught_warnings if m.startswith(f"{name} ")]
            for css, on in (("nbt-invalid", name in errors), ("nbt-warned", bool(warned)),
                            ("nbt-changed", _listed(values[name]) != _listed(defaults.get(name)))):
                (widget.add_class if on else widget.remove_class)(css)
            help_text = html.escape(cls.help(name))
            if name in errors:
                self._cells[name].value = f"<span style='color:#cf222e'>{html.escape(errors[name])}</span>"
            elif warned:
                self._cells[name].value = f"<span style='color:#9a6700'>⚠ {html.escape(warned[0])}</span>"
            else:
                self._cells[name].value = f"<span style='color:#57606a;font-size:12px'>{help_text}</span>"
        lines = [message_html(m, "error") for m in dict.fromkeys(errors.values())]
        lines += [message_html(m, "warning") for m in caught_warnings]
        if config is not None and not caught_warnings:
            changed = config.changed()
            lines.append(message_html("valid; " + (", ".join(f"{k}={_shown(v)}" for k, v in changed.items())
                                                   if changed else f"{platform} defaults"), "ok"))
        self.messages.value = "".join(lines)
        self.launch.disabled = config is None
        self.dry_run_button.disabled = config is None
        return config

    @property
    def value(self) -> MethodConfig:
        """The config the form holds (ValueError naming every problem when it is not valid)."""
        config = self._check()
        if config is None:
            raise ValueError("; ".join(dict.fromkeys(self.errors.values())))
        return config

    @property
    def spec(self):
        """The JobSpec a launch uses: the template spec (model, data, name) with this form's config."""
        from nbtoolkit.runtime import JobSpec

        labels = tuple(label.strip() for label in self.labels.value.split(",") if label.strip()) or None
        extra = dict(self.template.extra) if self.template is not None else {}
        return JobSpec(self.method, self.value, model=self.model.value.strip() or None,
                       train_file=self.train_file.value.strip() or None,
                       eval_file=self.eval_file.value.strip() or None, labels=labels,
                       name=self.name.value.strip() or None, extra=extra)

    # -- actions ----------------------------------------------------------------------------------------------

    def _runtime(self) -> Any:
        if self.runtime is None:
            from nbtoolkit.runtime import LocalRuntime

            self.runtime = LocalRuntime("runs")
        return self.runtime

    def dry_run(self) -> Any:
        """What the Dry run button shows: the runtime's report for this spec (nothing starts)."""
        self.last_report = self._runtime().launch(self.spec, dry_run=True)
        return self.last_report

    def launch_job(self, *, monitor: bool = False) -> Any:
        """Launch the job (what the Launch button does) and return its Job; monitor=True also starts a JobMonitor."""
        self.job = self._runtime().launch(self.spec)
        if monitor:
            from nbtoolkit.ui.monitor import JobMonitor

            self.monitor = JobMonitor(self.job)
        return self.job

    # -- events -----------------------------------------------------------------------------------------------

    def _on_field_change(self, change: Any) -> None:
        self._check()

    def _on_platform_change(self, change: Any) -> None:
        self._build_fields()

    def _show(self, *items: Any) -> None:
        from IPython.display import HTML

        self.output.clear_output()
        for item in items:
            self.output.append_display_data(HTML(item) if isinstance(item, str) else item)

    def _on_dry_run_click(self, button: Any) -> None:
        try:
            config = self.value
            report = self.dry_run()
        except (NbtoolkitError, ValueError, TypeError, OSError) as error:
            self._show(message_html(str(error), "error"))
            return
        changed = config.changed()
        resolved = (f"<details><summary>resolved config ({len(changed)} changed from the {config.platform} "
                    f"defaults: {html.escape(', '.join(changed) or 'none')})</summary><pre>"
                    f"{html.escape(json.dumps(config.to_dict(), indent=2))}</pre></details>")
        self._show(report, resolved)

    def _on_launch_click(self, button: Any) -> None:
        from nbtoolkit.runtime import LaunchError

        try:
            self.launch_job(monitor=self.show_monitor)
        except LaunchError as error:
            self.last_report = error.report
            self._show(message_html("not launched: a check failed", "error"), error.report)
            return
        except (NbtoolkitError, ValueError, TypeError, OSError) as error:
            self._show(message_html(str(error), "error"))
            return
        self._show(self.monitor.widget if self.monitor is not None else self.job)

    def fallback_html(self) -> str:
        try:
            snapshot = f"<pre>{html.escape(json.dumps(self.value.to_dict(), indent=2))}</pre>"
        except ValueError as error:
            snapshot = message_html(str(error), "error")
        return widgets_missing_html("HyperparameterForm", snapshot)


def _listed(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
