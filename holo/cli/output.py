"""How the ``holo`` commands print: tables, progress bars on a terminal, JSON."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["ByteBar", "StageBars", "table"]


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns under a header and a rule."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _tqdm() -> Any:
    """tqdm, when stderr is a terminal and tqdm is installed (bars are cosmetic: a lean
    install prints none)."""
    if not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm


class StageBars:
    """One bar per pipeline stage, on stderr; silent when not ``enabled`` or not a terminal."""

    def __init__(self, enabled: bool) -> None:
        self._tqdm = _tqdm() if enabled else None
        self.bar: Any = None
        self.stage = ""

    def __call__(self, stage: str, fraction: float) -> None:
        if self._tqdm is None:
            return
        if stage != self.stage:
            self.close()
            self.stage = stage
            self.bar = self._tqdm(
                total=100, desc=f"{stage:<9}", unit="%", file=sys.stderr, leave=True
            )
        self.bar.n = round(100 * fraction)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class ByteBar:
    """A count bar on stderr: bytes (uploads, downloads) or another ``unit`` (instances
    pulled); silent as :class:`StageBars` is."""

    def __init__(self, enabled: bool, desc: str, unit: str = "B") -> None:
        tqdm = _tqdm() if enabled else None
        self.bar = (
            None
            if tqdm is None
            else tqdm(total=0, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr)
        )

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
