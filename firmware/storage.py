# Small records in the unit's own flash filesystem (littlefs on the ESP32, a folder on
# the virtual board). Each record carries a CRC so a torn or rotten file reads as absent.
import os
import struct

from proto import crc16


class Store:
    """Named records under one directory; write() replaces a record atomically."""

    def __init__(self, root):
        self._root = root if root.endswith("/") else root + "/"

    def read(self, name):
        """The record's payload, or None if it is missing or fails its CRC."""
        try:
            with open(self._root + name, "rb") as f:
                data = f.read()
        except OSError:
            return None
        n = len(data)
        if n < 2 or crc16(data, n - 2) != struct.unpack_from(">H", data, n - 2)[0]:
            return None
        return data[: n - 2]

    def write(self, name, data):
        """Write data (+CRC) to a temporary file, then rename it over the record.

        Returns True once the record is stored; False if the
        filesystem refused. littlefs and POSIX rename replace the target atomically, so
        a power cut leaves either the old or the new record, never a mix.
        """
        path = self._root + name
        tmp = path + ".new"
        crc = bytearray(2)
        struct.pack_into(">H", crc, 0, crc16(data, len(data)))
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.write(crc)
            try:
                os.rename(tmp, path)
            except OSError:
                # a filesystem whose rename does not replace (FAT): remove, then rename
                os.remove(path)
                os.rename(tmp, path)
        except OSError:
            return False
        return True

    def remove(self, name):
        try:
            os.remove(self._root + name)
        except OSError:
            pass
