"""Video of a session: tracks and their frames on the session clock.

=====================  ===================================================================
:mod:`.frames`         codec parameters, encoded frames, pushed access units (records)
:mod:`.relay`          one track's fan-out to its viewers, bounded per viewer
:mod:`.pump`           frames from a source thread to the event loop
:mod:`.ingest`         files, URLs and devices read with PyAV (the ``video`` extra)
:mod:`.push`           access units a client pushes (the ``video`` extra)
:mod:`.hub`            the tracks of a node's sessions
=====================  ===================================================================

``frames``, ``relay`` and ``pump`` need nothing beyond the standard library: the client
SDK uses the records.
"""
