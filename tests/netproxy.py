"""A TCP proxy a test can cut and restore: a real server behind it, and the
network between it and a client failing on demand (an outage, a restart, a
partition), which the real server cannot be made to do by itself."""

from __future__ import annotations

import contextlib
import socket
import threading

from psycopg import conninfo


class CuttableProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._open = True
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._closed = False
        self._flowing = threading.Event()
        self._flowing.set()
        self.accepted = 0  # connections forwarded upstream so far
        threading.Thread(target=self._accept, daemon=True).start()

    def hold(self) -> None:
        """Forward nothing, keep every connection open: a server that hangs (a
        stopped process, a frozen VM), where a client sees no error at all."""
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (until `restore`)."""
        with self._lock:
            self._open = False
            conns, self._conns = self._conns, []
        for c in conns:  # wakes both pumps of each pair, which then close them
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def close(self) -> None:
        self._closed = True
        self.release()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = not self._open
            if refuse:
                client.close()
                continue
            try:
                server = self._connect_upstream()
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                # Cut while connecting upstream: this one must not outlive the cut
                # (a session that slipped through held a shard in a test).
                refuse = not self._open
                if not refuse:
                    self._conns += [client, server]
                    self.accepted += 1
            if refuse:
                client.close()
                server.close()
                continue
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _connect_upstream(self) -> socket.socket:
        host, port = self.upstream
        if host.startswith("/"):  # a unix socket directory (PostgreSQL's convention)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port), timeout=5)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self._flowing.wait()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            # Shut both down (a blocked recv in the other pump returns), close only
            # our own end: closing a socket another thread is reading would leave
            # the connection open without sending FIN.
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                src.close()


def database_proxy(dsn: str) -> tuple[CuttableProxy, str]:
    """A proxy in front of the database `dsn` names, and the DSN through it."""
    parts = conninfo.conninfo_to_dict(dsn)
    proxy = CuttableProxy(str(parts.get("host") or "127.0.0.1"), int(parts.get("port") or 5432))
    return proxy, conninfo.make_conninfo(dsn, host="127.0.0.1", port=proxy.port)
