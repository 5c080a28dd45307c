"""HyperparameterForm: one field per config field, both default sets side by side, inline warnings, dry run, launch."""

from __future__ import annotations

import dataclasses
import html
import json
import threading
from typing import Any

from nbtoolkit.advisor import advise_launch
from nbtoolkit.errors import NbtoolkitError, unknown_name_message
from nbtoolkit.training.config import CONFIGS, PLATFORMS, MethodConfig
from nbtoolkit.ui._base import WidgetView, widgets_missing_html
from nbtoolkit.ui._widgets import COLOURS, FULL_WIDTH, MUTED, add_classes, message_html, widgets

PLATFORM_TITLES = {"local": "local: calibrated for the embedded 135M model on a CPU",
                   "nova": "Nova: Amazon Nova on SageMaker (its published bounds, docs/hyperparameters.md)"}
# A changed field keeps the theme's own input colours (text stays readable in light and dark themes) and gets a
# bar on its left in the theme's warning colour.
_STYLE = f"""<style>
.nbt-hp-form .nbt-invalid input, .nbt-hp-form .nbt-invalid select {{ border: 2px solid {COLOURS["error"]} !important; }}
.nbt-hp-form .nbt-warned input {{ border: 2px solid var(--jp-warn-color1, #d4a72c) !important; }}
.nbt-hp-form .nbt-changed input, .nbt-hp-form .nbt-changed select {{
  border-left: 5px solid var(--jp-warn-color1, #d4a72c) !important; font-weight: 600; }}
</style>"""
JOB_FIELDS = ("name", "model", "train_file", "eval_file", "labels")
ESTIMATE_DELAY = 0.4  # seconds of quiet after a change before the estimate is recomputed (typing stays smooth)
NEEDS_DATA = "estimate: give the model and the data file (Job: model and data) to see how long this job takes"
CALIBRATING = "estimate: calibrating this machine in the background (about 30 s: a couple of steps on a few rows)"


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
    The estimate line under the fields follows every change (recomputed in a thread a moment after the last one;
    `estimate_ready` is set when it is current); "Calibrate" times this machine in the background.
    Children: `platform`, `fields[name]` (also `form.<name>`), `name`, `model`, `train_file`, `eval_file`,
    `labels`, `reset` (back to the opening values), `platform_defaults`, `dry_run_button`, `launch`, `messages`,
    `estimate`, `calibrate`, `output`.
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
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns="minmax(400px, 1.3fr) 80px 80px 120px 2fr",
                                              grid_gap="2px 8px", align_items="center"))
        self.messages = add_classes(w.HTML(), "nbt-warnings")
        self.estimate = add_classes(w.HTML(), "nbt-estimate")
        self.calibrate = add_classes(w.Button(description="Calibrate", icon="clock-o", tooltip=(
            "time a couple of steps on a few rows of the data (about 30 s, in the background) so the estimate "
            "uses this machine's own rate")), "nbt-calibrate")
        self.estimate_ready = threading.Event()  # set each time the estimate shown is up to date
        self._estimate_timer: threading.Timer | None = None
        self._estimate_generation = 0
        self._estimate_lock = threading.RLock()
        self.name = w.Text(description="job name")
        self.model = w.Text(description="model", layout=w.Layout(width=FULL_WIDTH))
        self.train_file = w.Text(description="train_file", layout=w.Layout(width=FULL_WIDTH))
        self.eval_file = w.Text(description="eval_file", layout=w.Layout(width=FULL_WIDTH))
        self.labels = w.Text(description="labels", placeholder="comma-separated")
        if spec is not None:
            self.name.value = spec.name or ""
            self.model.value = spec.model or ""
            self.train_file.value = spec.train_file or ""
            self.eval_file.value = spec.eval_file or ""
            self.labels.value = ", ".join(spec.labels or ())
        auto = w.Layout(width="auto")
        self.reset = add_classes(w.Button(description="Reset", icon="undo", layout=auto,
                                          tooltip="back to the values the form opened with"), "nbt-reset")
        self.platform_defaults = add_classes(w.Button(description="Platform defaults", icon="list", layout=auto,
                                                      tooltip="the active platform's defaults (not the profile's "
                                                              "sizes)"), "nbt-platform-defaults")
        self.dry_run_button = add_classes(w.Button(description="Dry run", icon="search", layout=auto,
                                                   tooltip="every check a launch runs; starts nothing"), "nbt-dry-run")
        self.launch = add_classes(w.Button(description="Launch", icon="play", button_style="success"), "nbt-launch")
        self.output = add_classes(w.Output(), "nbt-output")
        job_box = w.VBox([self.name, self.model, self.train_file, self.eval_file, self.labels])
        self.job_section = add_classes(w.Accordion(children=[job_box], titles=("Job: model and data",)),
                                       "nbt-hp-job")
        self.widget = add_classes(w.VBox([
            w.HTML(_STYLE + f"<b>{html.escape(self.config_class.__name__)}</b> "
                   f"<span style='color:{MUTED}'>{html.escape(self.config_class.__doc__ or '')}</span>"),
            self.platform, self.platform_info, self.grid, self.messages, self.job_section,
            w.HBox([self.estimate, self.calibrate]),
            w.HBox([self.reset, self.platform_defaults, self.dry_run_button, self.launch]), self.output,
        ], layout=w.Layout(width=FULL_WIDTH)), "nbt-hp-form", f"nbt-hp-{method}")

        self.platform.observe(self._on_platform_change, names="value")
        self.reset.on_click(lambda _: self.reset_values())
        self.platform_defaults.on_click(lambda _: self._build_fields())
        self.dry_run_button.on_click(self._on_dry_run_click)
        self.launch.on_click(self._on_launch_click)
        self.calibrate.on_click(self._on_calibrate_click)
        for widget in (self.model, self.train_file, self.eval_file, self.labels):
            widget.observe(self._on_job_change, names="value")

        base = spec.config if spec is not None and spec.config is not None and \
            spec.config.platform == platform and isinstance(spec.config, self.config_class) else None
        self._build_fields(base.to_dict() if base is not None else None)
        if overrides:
            self.set(**overrides)
        self.opened_with = {platform: self._values()}

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
            bold = {p: "font-weight:bold;" if p == platform else f"color:{MUTED};" for p in PLATFORMS}
            note = w.HTML()
            self._cells[name] = note
            cells += [widget, w.HTML(_default_cell(local, bold["local"])), w.HTML(_default_cell(nova, bold["nova"])),
                      w.HTML(f"<code>{html.escape(_bounds_text(rule))}</code>"), note]
        self.grid.children = cells
        self.platform_info.value = (f"<span style='color:{MUTED}'>active defaults: <b>"
                                    f"{html.escape(PLATFORM_TITLES[platform])}</b>; highlighted fields differ from "
                                    "them</span>")
        self._check()

    def _make_input(self, field: dataclasses.Field, rule: Any, value: Any) -> Any:
        w = widgets()
        kind = _kind(field, rule)
        # Wide enough for the longest field name (parallel_micro_batches), so no label is cut.
        longest = max(len(f.name) for f in dataclasses.fields(self.config_class))
        common = {"description": field.name, "tooltip": field.metadata.get("help", ""),
                  "style": {"description_width": f"{longest * 0.62 + 1.5:.1f}em"}, "layout": w.Layout(width=FULL_WIDTH)}
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
        if kind == "tuple":  # a long list (target_modules) wraps instead of scrolling out of sight
            return w.Textarea(value=_shown(value), rows=max(2, -(-len(_shown(value)) // 18)), **common)
        return w.Text(value="" if value is None else str(value), **common)

    def reset_values(self) -> None:
        """What Reset does: the values the form opened with on this platform (a profile's sizes, overrides);
        the platform defaults where it opened on the other platform. "Platform defaults" shows those always."""
        self._build_fields(self.opened_with.get(self.platform.value))

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
                self._cells[name].value = f"<span style='color:{COLOURS['error']}'>{html.escape(errors[name])}</span>"
            elif warned:
                self._cells[name].value = (f"<span style='color:{COLOURS['warning']}'>⚠ "
                                           f"{html.escape(warned[0])}</span>")
            else:
                self._cells[name].value = f"<span style='color:{MUTED};font-size:12px'>{help_text}</span>"
        lines = [message_html(m, "error") for m in dict.fromkeys(errors.values())]
        lines += [message_html(m, "warning") for m in caught_warnings]
        if config is not None and not caught_warnings:
            changed = config.changed()
            lines.append(message_html("valid; " + (", ".join(f"{k}={_shown(v)}" for k, v in changed.items())
                                                   if changed else f"{platform} defaults"), "ok"))
        self.messages.value = "".join(lines)
        self.launch.disabled = config is None
        self.dry_run_button.disabled = config is None
        self._config = config
        self._schedule_estimate()
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
        return self._spec_for(self.value)

    def _spec_for(self, config: MethodConfig):
        from nbtoolkit.runtime import JobSpec

        labels = tuple(label.strip() for label in self.labels.value.split(",") if label.strip()) or None
        extra = dict(self.template.extra) if self.template is not None else {}
        return JobSpec(self.method, config, model=self.model.value.strip() or None,
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

    def _on_job_change(self, change: Any) -> None:
        self._schedule_estimate()

    # -- the estimate (computed in a thread, a moment after the last change) ------------------------------------

    def _estimate_spec(self) -> Any | None:
        """The spec to estimate, or None when the form is invalid or lacks the model or the data."""
        config = self.__dict__.get("_config")
        if config is None or not self.model.value.strip() or \
                not (self.train_file.value.strip() or self.eval_file.value.strip()):
            return None
        try:
            return self._spec_for(config)
        except (ValueError, TypeError):
            return None

    def _schedule_estimate(self, *, calibrate: bool = False, delay: float = ESTIMATE_DELAY) -> None:
        if "estimate" not in self.__dict__:
            return  # fields are being built
        with self._estimate_lock:
            self._estimate_generation += 1
            generation = self._estimate_generation
            if self._estimate_timer is not None:
                self._estimate_timer.cancel()
            self.estimate_ready.clear()
            spec = self._estimate_spec()
            if spec is None:
                self.estimate.value = message_html(NEEDS_DATA, "info") if not self.errors else ""
                self.estimate_ready.set()
                return
            if calibrate:
                self.estimate.value = message_html(CALIBRATING, "info")
            self._estimate_timer = threading.Timer(delay, self._update_estimate, (spec, generation, calibrate))
            self._estimate_timer.daemon = True
            self._estimate_timer.start()

    def _update_estimate(self, spec: Any, generation: int, calibrate: bool) -> None:
        """Runs in a timer thread: only sets widget traits, and only when no newer change came in."""
        try:
            text, kind = self._estimate_text(spec, calibrate), "info"
        except Exception as error:  # noqa: BLE001 - whatever fails, the form shows it and stays usable
            text, kind = f"estimate: not available ({type(error).__name__}: {error})", "warning"
        with self._estimate_lock:
            if generation != self._estimate_generation:
                return
            self.estimate.value = message_html(text, kind)
            self.estimate_ready.set()

    def _estimate_text(self, spec: Any, calibrate: bool) -> str:
        if spec.config.platform == "nova":
            return self._nova_estimate_text(spec)
        from nbtoolkit.estimate.local import estimate_spec

        runs_dir = getattr(self._runtime(), "runs_dir", None)
        found = estimate_spec(spec, calibrate=calibrate, runs_dir=runs_dir)
        if found.estimate is None:
            return f"estimate: {found.work.detail}; {found.message}"
        return f"estimate: {found.estimate.headline()} ({found.work.detail}; rate {found.estimate.source})"

    def _nova_estimate_text(self, spec: Any) -> str:
        from nbtoolkit.aws.nova import NOVA_INSTANCES
        from nbtoolkit.estimate.cloud import instance_price, nova_instance_count
        from nbtoolkit.models import resolve_model

        model = resolve_model(spec.model).name
        allowed = NOVA_INSTANCES.get((model, spec.kind), ())
        runtime_type = getattr(self.runtime, "instance_type", None)
        instance_type = runtime_type if runtime_type in allowed else (allowed[0] if allowed else None)
        if instance_type is None:
            return f"estimate: no Nova recipe runs {spec.kind} for {model}"
        count = nova_instance_count(model, spec.kind, instance_type, getattr(self.runtime, "instance_count", None))
        price = instance_price(instance_type)
        cost = (f"${price.usd_per_hour * count:,.2f} per hour" if price.usd_per_hour is not None
                else "price unknown offline")
        return (f"estimate: {count} x {instance_type}, {cost} ({price.source}); hours depend on the model's size, "
                "which Nova does not publish")

    def _on_calibrate_click(self, button: Any) -> None:
        self._schedule_estimate(calibrate=True, delay=0.0)

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
