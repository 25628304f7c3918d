#!/usr/bin/env python3
"""Holds writers of one mount inside open(): a fanotify permission listener
(FAN_CLASS_CONTENT, FAN_OPEN_PERM on the whole mount) that never answers.

A writer opening an existing file with O_TRUNC takes the superblock's write
reference before the permission event, so a FIFREEZE of that filesystem then
blocks until the event is answered. Used by tests/freeze.rs to make a freeze
complete after its deadline, for real.

Usage: fanotify_hold.py MOUNT READY_FILE
Prints nothing; touches READY_FILE (outside MOUNT) once the mark is set and
again with "held" once a permission event is pending. On SIGTERM it answers
every pending event with FAN_ALLOW (closing the group would do the same).
"""
import ctypes
import os
import signal
import struct
import sys

FAN_CLOEXEC = 0x1
FAN_CLASS_CONTENT = 0x4
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_OPEN_PERM = 0x10000
FAN_ALLOW = 0x1
AT_FDCWD = -100

libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64,
                               ctypes.c_int, ctypes.c_char_p]


def main():
    mount, ready = sys.argv[1], sys.argv[2]
    fd = libc.fanotify_init(FAN_CLOEXEC | FAN_CLASS_CONTENT, os.O_RDONLY)
    if fd < 0:
        sys.exit("fanotify_init: " + os.strerror(ctypes.get_errno()))
    if libc.fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN_PERM,
                          AT_FDCWD, mount.encode()) < 0:
        sys.exit("fanotify_mark: " + os.strerror(ctypes.get_errno()))
    pending = []

    def release(_sig, _frame):
        for ev_fd in pending:
            os.write(fd, struct.pack("iI", ev_fd, FAN_ALLOW))
            os.close(ev_fd)
        os._exit(0)

    signal.signal(signal.SIGTERM, release)
    with open(ready, "w") as f:
        f.write("marked\n")
    while True:
        buf = os.read(fd, 4096)
        off = 0
        while off + 24 <= len(buf):
            # struct fanotify_event_metadata: event_len, vers, reserved,
            # metadata_len, mask, fd, pid
            event_len, _v, _r, _ml, _mask, ev_fd, _pid = struct.unpack_from(
                "IBBHQii", buf, off)
            pending.append(ev_fd)
            off += event_len
        with open(ready, "w") as f:
            f.write("held\n")


if __name__ == "__main__":
    main()
