"""Matplotlib figures without pyplot: a new figure on the Agg canvas and an atomic PNG write. The
analysis figures (`analysis`) and the studies' reports (`studies.report`) draw with these; a leaf
module, so both rooms can use it whatever their place in DESIGN.md's order."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def new_figure(width: float, height: float):
    """A matplotlib figure of `width` x `height` inches on the Agg canvas (no pyplot, no display, no
    global state), with the constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write `figure` as PNG atomically (temporary file in the same folder, then rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            figure.savefig(f, format="png", dpi=dpi)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the PNG a normal file's mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = ["new_figure", "save_figure"]
