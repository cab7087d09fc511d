"""The OpenIGTLink gateway (``holo igtl``): a session served to 3D Slicer and trackers.

=====================  ==================================================================
:mod:`.gateway`        :class:`IgtlGateway`: joins a session (SDK), serves peers on TCP
:mod:`.tracker`        :class:`TrackerSample` and the sinks it goes to (the pointer; the
                       hook for registration)
:mod:`.landmarks`      landmarks touched with a tracked pointer -> the session's Register
:mod:`.scene`          session records -> POLYDATA, TRANSFORM, POINT (frames: RAS mm)
:mod:`.messages`       framing, CRC, limits; TRANSFORM, POINT (pyigtl), POSITION
:mod:`.polydata`       the POLYDATA body, from the protocol specification
=====================  ==================================================================

Needs the ``igtl`` extra (``pip install 'holo[igtl]'``). Example::

    import asyncio
    from holo.igtl import GatewayConfig, IgtlGateway

    async def main() -> None:
        gateway = IgtlGateway("holo.example:50051", token=token, ca=ca_pem,
                              config=GatewayConfig(port=18944))
        await gateway.start()  # joins the case's open session; 3D Slicer connects now
        await asyncio.Event().wait()

OpenIGTLink has no security of its own: keep the gateway on loopback (the default) or a
trusted interface.
"""

from holo.igtl.gateway import DEFAULT_PORT, GatewayConfig, IgtlGateway, parse_listen
from holo.igtl.landmarks import LandmarkCollector, register_from_tracker
from holo.igtl.tracker import PointerForwarder, TrackerSample, TrackerSink

__all__ = [
    "DEFAULT_PORT",
    "GatewayConfig",
    "IgtlGateway",
    "LandmarkCollector",
    "PointerForwarder",
    "TrackerSample",
    "TrackerSink",
    "parse_listen",
    "register_from_tracker",
]
