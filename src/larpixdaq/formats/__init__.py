"""Codecs for every LArPix format the DAQ reads or writes: no sockets, clocks or threads.

Pure (bytes, arrays and values in and out, nothing else): ``packets``, ``packets_v1``,
``pacman`` (the caller stamps message headers), ``rows``, ``registers``, ``chipkey``, and the
codecs of ``chipconfig`` and ``network`` (``from_json``/``to_json`` and everything else).

The file edge, and only it, does I/O:

* ``chipconfig`` and ``network``: ``save`` writes and the ``load*`` functions read JSON
  files (a chip configuration may name a parent file to inherit from, which is why loading
  is more than parsing one text); each is a few lines around the pure codec.
* ``hdf5file`` and ``rawfile``: the LArPix+HDF5 and raw-message files themselves. Their
  writers stamp the file's ``created``/``modified`` attributes with the clock, and
  ``hdf5file`` hashes a finished file in a background thread (the checksum is part of the
  file contract, and hashing gigabytes must not hold up the writer).
"""
