"""FeatureStore: a crash-safe, content-addressed HDF5 cache of feature rows.

One HDF5 file holds the features of one extractor configuration (its
*fingerprint*). A row is keyed by the sha256 of the image file's bytes, so a
renamed image is a cache hit and an edited one a miss.

Layout, readable with plain h5py or h5dump::

    /keys             (n,)   S64   hex sha256 of each image file's bytes
    /paths            (n,)   str   the path the row was first computed from
    /features/<tap>   (n, d) float32 or float16, chunked, resizable
    attrs: format, format_version, fingerprint, config (JSON), n_rows,
           feature_code_version, cnnfeat/h5py/numpy versions, description

Integrity at rest (format version 2). Every fixed-size dataset (keys, features,
the index's rows and keys) is stored with HDF5's ``fletcher32`` filter: each
chunk carries a checksum that HDF5 verifies whenever the chunk is read, so a
changed byte is never returned as data. A failed read is turned into a
:class:`~cnnfeat.exceptions.StoreCorruptError` naming the dataset and the rows
of the damaged chunks; :func:`repair_store` rewrites the file without them (the
extractors then recompute those rows from the images). String columns (paths,
the index's labels) cannot carry a filter in HDF5: their ``sha256`` attribute
is checked instead. A version-1 store (no checksums) is still read, and is
rewritten with checksums the next time it is written.

Crash safety. HDF5 is not crash-consistent on its own: a process killed while
the library flushes metadata can leave a file that no longer opens. So the
HDF5 file is never modified in place. New rows are appended, batch by batch,
to a journal beside it (``<file>.journal``); each record ends with a CRC32, so
a record cut short by a crash is detected and dropped: a row is *committed*
when its record is complete. The journal is merged into a copy of the HDF5
file which then atomically replaces the old one (``os.replace``); this happens
when the writer closes, when a crashed run is resumed, and during long runs
whenever the journal has grown as large as the file (so the copying stays
linear in the number of rows). A lock file (``<file>.lock``, held with
``flock``) refuses a second writer; the kernel releases it when the holder
dies, so a lock left by a dead process is simply taken over.
"""

from cnnfeat.store.feature_store import FeatureStore
from cnnfeat.store.integrity import check_store, repair_store
from cnnfeat.store.memory import MemoryRows, RowStore
from cnnfeat.store.schema import FEATURE_CODE_VERSION, FORMAT_VERSION, fingerprint_of, read_fingerprint

__all__ = [
    "FEATURE_CODE_VERSION",
    "FORMAT_VERSION",
    "FeatureStore",
    "MemoryRows",
    "RowStore",
    "check_store",
    "fingerprint_of",
    "read_fingerprint",
    "repair_store",
]
