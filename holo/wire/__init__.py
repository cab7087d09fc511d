"""Every conversion between holo.v1 messages and holo's transport-neutral records.

The server's services and the client SDK both convert here, so a client reads exactly
what the server wrote, and a second transport (gRPC-Web) reuses the same conversions.
Checked at the edge, "strict when decoding what a client sends": non-finite numbers,
zero quaternions, oversized fields are INVALID_ARGUMENT with a one-line message.

=====================  ==================================================================
:mod:`.common`         vectors, poses, capabilities
:mod:`.session`        session records, events, snapshots, ephemeral values
:mod:`.asset`          uploads, studies, jobs, model manifests
:mod:`.video`          codec parameters, frames, tracks, pushed access units
:mod:`.recording`      recordings and replays (server side only: it reads recordings)
=====================  ==================================================================

Only this package, :mod:`holo.server` and :mod:`holo.client` import :mod:`holo.v1`.
"""
