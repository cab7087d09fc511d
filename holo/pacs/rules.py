"""Auto-convert rules of ``holo serve --dicom-convert``: which received series get a job.

A rule is ``KEY=GLOB[,KEY=GLOB...][:PRESET]``, e.g. ``modality=CT``,
``modality=CT,body_part=KNEE:bone`` or ``description=*bone*:bone``. Every ``KEY=GLOB`` of
a rule must match a series (globs as :mod:`fnmatch`, case-insensitive: scanners spell
``KNEE``, ``Knee`` and ``knee``); the preset defaults to ``bone``, and a last ``:`` followed
by a plain word names it (``*a:b*`` stays a glob). A series matching any
rule is converted once, with the preset of the first rule it matches.

Keys name series attributes by their DICOM keywords:

- ``modality``: (0008,0060) Modality, from the study summary's ``series``;
- ``description``: (0008,103E) SeriesDescription, from the study summary's ``series``;
- ``body_part``: (0018,0015) BodyPartExamined, from the received headers (the summary
  does not keep it).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from holo.errors import InvalidRequestError

__all__ = ["KEYWORDS", "ConvertRule", "parse_rules"]

#: Rule keys and the DICOM keyword each matches.
KEYWORDS = {
    "modality": "Modality",
    "body_part": "BodyPartExamined",
    "description": "SeriesDescription",
}
DEFAULT_PRESET = "bone"
_PRESET = re.compile(r"[A-Za-z0-9_-]+")  # what may follow the last ':' as a preset name


@dataclass(frozen=True)
class ConvertRule:
    """One ``--dicom-convert`` rule: ``(keyword, glob)`` pairs that must all match."""

    text: str
    matches: tuple[tuple[str, str], ...]
    preset: str = DEFAULT_PRESET

    @classmethod
    def parse(cls, text: str) -> ConvertRule:
        """The rule ``text`` spells; :class:`InvalidRequestError` in one line if malformed."""
        from segmentation.presets import PRESET_NAMES

        def bad(why: str) -> InvalidRequestError:
            return InvalidRequestError(
                f"--dicom-convert {text!r}: {why}; write KEY=GLOB[,KEY=GLOB...][:PRESET] "
                f"with keys {', '.join(KEYWORDS)}, e.g. modality=CT,body_part=KNEE:bone"
            )

        body, preset = text, DEFAULT_PRESET
        head, sep, tail = text.rpartition(":")
        if sep and _PRESET.fullmatch(tail.strip()):  # a ':' inside a glob is not a preset
            body, preset = head, tail.strip()
            if preset not in PRESET_NAMES:
                raise bad(f"unknown preset {preset!r} (presets: {', '.join(PRESET_NAMES)})")
        matches = []
        for part in body.split(","):
            key, eq, glob = part.partition("=")
            key, glob = key.strip().lower(), glob.strip()
            if not eq or not glob:
                raise bad(f"{part.strip()!r} is not KEY=GLOB")
            if key not in KEYWORDS:
                raise bad(f"unknown key {key!r}")
            matches.append((KEYWORDS[key], glob.lower()))
        return cls(text, tuple(matches), preset)

    def match(self, series: Mapping[str, object]) -> bool:
        """Whether every pattern matches ``series`` (a missing attribute matches ``*``)."""
        return all(
            fnmatch.fnmatchcase(str(series.get(keyword) or "").lower(), glob)
            for keyword, glob in self.matches
        )


def parse_rules(texts: Sequence[str]) -> tuple[ConvertRule, ...]:
    """Every rule parsed; the first malformed one refused (see :meth:`ConvertRule.parse`)."""
    return tuple(ConvertRule.parse(text) for text in texts)
