"""The holo gRPC server (``holo serve``; the ``server`` extra).

==========================  ==============================================================
:mod:`.app`                 wiring: store, job runner, hubs, servicers, TLS, health
:mod:`.interceptors`        the token and role check of every call; errors to status codes
:mod:`.access`              the one case check; a session id resolved once
:mod:`.monitor`             the call counter and the metrics endpoint (``--metrics``)
:mod:`.logs`                JSON log lines with the call's request id and subject
:mod:`.health_board`        health from the store's and the bus's watchers
:mod:`.encoded`             encode once what every subscriber is sent
:mod:`.upload_service`      UploadService
:mod:`.conversion_service`  ConversionService
:mod:`.asset_service`       AssetService
:mod:`.session_service`     SessionService
:mod:`.clock_service`       ClockService
:mod:`.video_service`       VideoService (tracks, recordings, replays)
==========================  ==============================================================

Servicers are thin: they convert messages (:mod:`holo.wire`) and call the transport-neutral
core (store, jobs, sessions, video, recordings), which does the work.
"""

from holo.extras import need

need("server", "grpc_health", "grpc_reflection", feature="holo serve")

from holo.server.app import RunningServer, ServerConfig, serve, start_server

__all__ = ["RunningServer", "ServerConfig", "serve", "start_server"]
