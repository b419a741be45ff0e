"""larpix-daq: data acquisition for LArPix pixelated charge readout."""

__version__ = "0.1.0"
