"""The holo gRPC server (``holo serve``): the only package that imports grpc and holo.v1
servicer code. Servicers are thin; the store, the job runner and the pipeline below do the
work."""

from holo.server.app import RunningServer, ServerConfig, serve, start_server

__all__ = ["RunningServer", "ServerConfig", "serve", "start_server"]
