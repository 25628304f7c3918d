#!/usr/bin/env python3
"""A SIEM's TLS syslog receiver, as small as it can be: accepts TLS
connections on 127.0.0.1 (RFC 5425's transport, with the client's
certificate required), and appends every byte each connection carries,
decrypted and untouched, to OUT_DIR/conn-N. The test parses the octet-counted
frames itself, so nothing here interprets, reframes or cuts a record.

Used by tests/forward.rs against the shipped rsyslog and syslog-ng drop-ins.

Usage: tls_collector.py CERT KEY CA OUT_DIR
Listens on an ephemeral port and writes it to OUT_DIR/port once listening.
Runs until killed.
"""
import os
import socket
import ssl
import sys
import threading


def serve(conn, path):
    with open(path, "ab", buffering=0) as out:
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                out.write(data)
        except (ssl.SSLError, OSError) as e:
            with open(path + ".error", "a") as err:
                err.write(f"{e}\n")
        finally:
            conn.close()


def main():
    cert, key, ca, out_dir = sys.argv[1:5]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    tmp = os.path.join(out_dir, "port.tmp")
    with open(tmp, "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(tmp, os.path.join(out_dir, "port"))
    n = 0
    while True:
        raw, _ = listener.accept()
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with open(os.path.join(out_dir, "handshake.error"), "a") as err:
                err.write(f"{e}\n")
            raw.close()
            continue
        path = os.path.join(out_dir, f"conn-{n}")
        n += 1
        threading.Thread(target=serve, args=(conn, path), daemon=True).start()


if __name__ == "__main__":
    main()
