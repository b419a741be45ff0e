"""Pure codecs for every LArPix format the DAQ reads or writes: no sockets, no clocks."""
