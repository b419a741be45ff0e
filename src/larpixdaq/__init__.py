"""larpix-daq: data acquisition for LArPix pixelated charge readout."""

from larpixdaq.version import __version__ as __version__


def __getattr__(name: str):
    # Lazy, so that `import larpixdaq` stays cheap and free of ZeroMQ for pure users.
    if name == "Operator":
        from larpixdaq.runcontrol.operator import Operator

        return Operator
    raise AttributeError(f"module 'larpixdaq' has no attribute {name!r}")
