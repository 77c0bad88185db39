"""Listening sockets bound before a server starts, so a bad address is one clear line."""

from __future__ import annotations

import errno
import os
import socket

BACKLOG = 4096


class ListenError(Exception):
    """`cannot listen on H:P: <cause>`; `option` is the flag to change (host or port)."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option

    def __str__(self) -> str:
        return f"{self.args[0]} (pass another --{self.option})"


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port); port 0 takes any free one."""
    where = f"cannot listen on {host}:{port}"
    try:
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise ListenError(f"{where}: {exc.strerror}", "host") from None
    try:
        return socket.create_server(address[:2], family=family, backlog=BACKLOG)
    except OSError as exc:
        cause = os.strerror(exc.errno) if exc.errno else str(exc)
        option = "host" if exc.errno == errno.EADDRNOTAVAIL else "port"
        raise ListenError(f"{where}: {cause}", option) from None
