"""Human-friendly durations such as ``"30m"`` or ``"1h30m"`` for config values.

Kept separate from ``ModelCheckpoint`` because the CLI and ``job.yaml`` accept the same
notation for other keys (signal delay, time limits); one parser means one accepted form.
"""

from __future__ import annotations

import re
from datetime import timedelta

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
# Units must appear at most once and from largest to smallest: "30m1h" or "1m1m" is far more
# likely a typo than an intent, so it is refused rather than summed.
_DURATION = re.compile(
    rf"(?:(?P<days>{_NUMBER})d)?(?:(?P<hours>{_NUMBER})h)?"
    rf"(?:(?P<minutes>{_NUMBER})m)?(?:(?P<seconds>{_NUMBER})s)?"
)
_ACCEPTED = (
    "one or more <number><unit> parts with units d, h, m, s in that order, "
    'e.g. "30m", "1h30m", "1.5h", "90s"'
)


def parse_duration(value: timedelta | str, *, name: str) -> timedelta:
    """Return ``value`` as a strictly positive ``timedelta``.

    Every caller uses durations as intervals or limits, where zero or a negative value can only
    be a mistake, so positivity is enforced here instead of at each call site. ``name`` is the
    config key reported in errors, so the user knows which setting to fix.
    """
    if isinstance(value, timedelta):
        duration = value
    elif isinstance(value, str):
        duration = _parse_text(value, name=name)
    else:
        raise TypeError(
            f"{name} must be a datetime.timedelta or a string ({_ACCEPTED}), "
            f"got {type(value).__name__}: {value!r}"
        )
    if duration <= timedelta(0):
        raise ValueError(f"{name} must be a positive duration, got {value!r}")
    return duration


def _parse_text(text: str, *, name: str) -> timedelta:
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"{name} must be {_ACCEPTED}; got {text!r}")
    parts = {unit: float(n) for unit, n in match.groupdict().items() if n is not None}
    try:
        return timedelta(**parts)
    except OverflowError:
        raise ValueError(f"{name} is too large to be a duration: {text!r}") from None
