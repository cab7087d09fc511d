"""The ``holo`` command line.

=================  ==================================================================
:mod:`.main`       the parser and how a command ends (one line on error, status 2)
:mod:`.output`     tables, progress bars, JSON
:mod:`.local`      ``studies``, ``read``, ``segment``, ``convert`` (the convert extra)
:mod:`.remote`     ``token``, ``upload``, ``jobs``, ``models``, ``fetch``, ``simulate``
:mod:`.serve`      ``serve``, ``replay`` (the server extra)
:mod:`.pacs`       ``pacs`` (the server extra)
:mod:`.igtl`       ``igtl``: the OpenIGTLink gateway (the igtl extra)
=================  ==================================================================
"""

from holo.cli.main import main

__all__ = ["main"]
