"""The run's experiment trackers (`run.trackers`, `run.tracker_kwargs`): what Accelerate can start.

Accelerate drops a tracker that is not installed without a word, and passes `init_kwargs` to each
tracker's own init; the recipe checks both before a run starts (`trackers_problem`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any


def trackers_problem(trackers: Sequence[str], tracker_kwargs: Mapping[str, Any]) -> str | None:
    """What is wrong with `run.trackers` / `run.tracker_kwargs` (None: nothing): every tracker is an
    installed Accelerate tracker, and init options go only to trackers that are listed."""
    from accelerate.tracking import get_available_trackers
    from accelerate.utils import LoggerType

    known = [t.value for t in LoggerType if t.value != "all"]
    available = {str(t) for t in get_available_trackers()}
    for tracker in trackers:
        if tracker not in known:
            hint = "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(tracker, known, n=1))
            return (f"`run.trackers`: {tracker!r} is not an Accelerate tracker{hint}; choose from "
                    f"{', '.join(known)}, or [] for none.")
        if tracker not in available:
            return (f"`run.trackers` names {tracker!r}, which is not installed: `pip install {tracker}` "
                    "(or remove it from `run.trackers`).")
    for tracker, options in tracker_kwargs.items():
        if tracker not in trackers:
            return (f"`run.tracker_kwargs` has options for {tracker!r}, which is not in `run.trackers` "
                    f"({list(trackers)}): add it there, or remove its options.")
        if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
            return (f"`run.tracker_kwargs.{tracker}` must be a mapping of its init's keyword arguments "
                    f"(e.g. {{space_id: you/runs}}), got {options!r}.")
    return None
