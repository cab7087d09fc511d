"""Session recordings and their replay: every track as received, the whole event log and
the ephemeral values, on the session clock (the ``video`` extra: PyAV writes the tracks).

=====================  ===================================================================
:mod:`.files`          the recording folder: :class:`Recorder` writes it, :class:`Recording`
                       reads it (crash-tolerant)
:mod:`.writer`         a recording written off the event loop
:mod:`.replay`         a recording served as a read-only session on its own clock
:mod:`.hub`            the recordings and replays of a node
=====================  ===================================================================
"""

__all__ = ["START_MODES"]

#: When a replay's clock starts: at the first viewer's join, at once, or when resumed.
START_MODES = ("join", "now", "paused")
