"""Bytes in and out of Flower records: one uint8 Array per message, as Flower carries it."""

import numpy as np
from flwr.app import Array, ArrayRecord

KEY = "align-fl"


def pack(data: bytes) -> ArrayRecord:
    """An ArrayRecord holding `data` as one uint8 array."""
    return ArrayRecord(array_dict={KEY: Array(np.frombuffer(data, dtype=np.uint8))})


def unpack(record: ArrayRecord) -> bytes:
    """The bytes `pack` stored."""
    return record[KEY].numpy().tobytes()
