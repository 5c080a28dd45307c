"""Colours as JupyterLab theme variables (light and dark themes both read well), with light fallbacks for
frontends without them (classic Notebook, static HTML). Used by every HTML view: job cards and the widgets."""

COLOURS = {
    "muted": "var(--jp-ui-font-color2, #57606a)",
    "ok": "var(--jp-success-color1, #1a7f37)",
    "warning": "var(--jp-warn-color0, #9a6700)",
    "error": "var(--jp-error-color1, #cf222e)",
    "border": "var(--jp-border-color2, #d0d7de)",
    "accent": "var(--jp-brand-color1, #1f6feb)",
}
MUTED = COLOURS["muted"]
