"""An exclusive, self-expiring lease on a checkpoint: one fit writes a checkpoint at a time.

The lease is a small JSON file next to the checkpoint, ``<checkpoint>.lease``, read and written
through fsspec (so local paths and fsspec URLs alike)::

    {"format": "diaggmm-dist-lease", "token": "<uuid4 hex>", "host": "node-3", "pid": 4242,
     "pid_namespace": "pid:[4026531836]", "since": 1767225600.0, "renewed": 1767225655.0,
     "expires_after": 30.0}

Its holder renews ``renewed`` every :data:`HEARTBEAT_SECONDS` from a background thread, and
removes the file when the fit ends. A fit that finds a lease no longer renewed for
``expires_after`` seconds (its holder died: SIGKILL, power loss, a lost node), or one whose
process is gone (same host and pid namespace: checked at once with ``os.kill(pid, 0)``), takes
it over; any other lease stops it with :class:`CheckpointInUseError` before any work. Hosts
sharing a checkpoint must have clocks that agree to well within ``expires_after``.

Taking a lease is a check followed by a write, not an atomic compare-and-swap (object stores
have none in fsspec): two fits racing for the same lease within milliseconds could both write
it. The last writer holds it, and the holder checks that the file still holds its token before
every checkpoint it writes (:meth:`Lease.verify`), so the other stops there with
:class:`CheckpointInUseError` instead of writing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import posixpath
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from ..locations import Location, location
from .zarr_groups import cat_whole

logger = logging.getLogger(__name__)

FORMAT = "diaggmm-dist-lease"
#: Seconds between two renewals of a held lease.
HEARTBEAT_SECONDS = 5.0
#: Seconds after its last renewal when a lease counts as abandoned (six missed heartbeats:
#: room for a stalled thread or a slow object store, short enough for a retry to take over).
EXPIRY_SECONDS = 30.0
#: Tokens of the leases this process holds (a lease of this pid with another token was left
#: behind by an earlier fit of this process, e.g. one whose lease could not be removed).
_HELD = set()


class CheckpointInUseError(OSError):
    """Another live fit holds the checkpoint's lease (an OSError like EBUSY: ends with that fit).

    Not a ``ValueError``: nothing is wrong with the input, and a retry after the holder ends (or
    dies and its lease expires) succeeds.
    """


def lease_url(where: str | os.PathLike | Location) -> str:
    """Where the lease of the checkpoint at ``where`` lives: ``<url>.lease``."""
    return location(where).joined(".lease").url


def _pid_namespace():
    """The pid namespace of this process (Linux), so that pids are compared only within one."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _process_ended(pid):
    """True when no process ``pid`` runs on this host (or it is a zombie: dead, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's process: alive
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in (b"Z", b"X")


def _when(epoch):
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _valid_record(record):
    """True when ``record`` is a lease this module wrote (right keys, right types)."""
    numbers = ("since", "renewed", "expires_after")
    return (
        isinstance(record, dict)
        and record.get("format") == FORMAT
        and isinstance(record.get("token"), str)
        and isinstance(record.get("host"), str)
        and isinstance(record.get("pid"), int)
        and not isinstance(record.get("pid"), bool)
        and all(
            isinstance(record.get(key), (int, float))
            and not isinstance(record.get(key), bool)
            and math.isfinite(record[key])
            for key in numbers
        )
        and record["expires_after"] > 0
    )


def abandoned_because(record, now=None):
    """Why the lease ``record`` no longer holds (a phrase); None while its holder may be alive."""
    if not _valid_record(record):
        return "the lease file is not a lease this library wrote"
    now = time.time() if now is None else now
    age = now - record["renewed"]
    if age > record["expires_after"]:
        return f"not renewed for {age:.0f} s (it expires after {record['expires_after']:.0f} s)"
    if record["host"] == socket.gethostname() and record.get("pid_namespace") == _pid_namespace():
        if record["pid"] == os.getpid():
            if record["token"] not in _HELD:
                return "left behind by an earlier fit of this process"
        elif _process_ended(record["pid"]):
            return f"its process {record['pid']} has ended"
    return None


def in_use_message(checkpoint_url, record, where):
    """'The checkpoint at ... is in use by <host>/<pid> since <time> ...': what and what to do."""
    age = time.time() - record["renewed"]
    return (
        f"The checkpoint at {checkpoint_url!r} is in use by {record['host']}/{record['pid']} since "
        f"{_when(record['since'])} (lease {where!r}, renewed {age:.0f} s ago): another fit is "
        "writing it. Wait for that fit to end, or use another checkpoint URL. If that fit has "
        f"died, its lease expires {record['expires_after']:.0f} s after its last renewal and the "
        "next fit takes over."
    )


def raise_if_in_use(where: str | os.PathLike | Location) -> None:
    """Raise :class:`CheckpointInUseError` if a live fit holds the checkpoint ``where``'s lease.

    Reads only (one GET on object stores).
    """
    reader = Lease(where, HEARTBEAT_SECONDS, EXPIRY_SECONDS)
    record = reader._read()
    if record is not None and abandoned_because(record) is None:
        raise CheckpointInUseError(in_use_message(reader.checkpoint_url, record, reader.url))


class Lease:
    """The lease on the checkpoint at ``url``, held by this process until :meth:`release`.

    Use :meth:`acquire`.

    Parameters
    ----------
    where : str, os.PathLike or Location
        Local path or fsspec URL of the checkpoint (the lease lives at ``<url>.lease``), or
        its Location (with storage options, or a local or fsspec store object).
    heartbeat : float
        Seconds between renewals.
    expires_after : float
        Seconds after the last renewal when others may take the lease over.
    """

    def __init__(self, where, heartbeat, expires_after):
        checkpoint = location(where)
        self.location = checkpoint.joined(".lease")
        self.checkpoint_url, self.url = checkpoint.url, self.location.url
        self.fs, self.path = self.location.filesystem()
        self.heartbeat, self.expires_after = float(heartbeat), float(expires_after)
        now = time.time()
        self.record = {
            "format": FORMAT,
            "token": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pid_namespace": _pid_namespace(),
            "since": now,
            "renewed": now,
            "expires_after": self.expires_after,
        }
        self._lost = None  # the CheckpointInUseError to raise once another fit took the lease
        self._stop = threading.Event()
        self._thread = None

    @classmethod
    def acquire(cls, where, heartbeat=None, expires_after=None):
        """Take the lease on the checkpoint at ``where`` and start renewing it.

        ``heartbeat`` and ``expires_after`` default to :data:`HEARTBEAT_SECONDS` and
        :data:`EXPIRY_SECONDS` (read at call time, so tests can shorten them).

        Raises
        ------
        CheckpointInUseError
            A live holder has it: the message names its host, pid and since when.
        """
        lease = cls(
            where,
            HEARTBEAT_SECONDS if heartbeat is None else heartbeat,
            EXPIRY_SECONDS if expires_after is None else expires_after,
        )
        lease._take()
        _HELD.add(lease.record["token"])
        lease._thread = threading.Thread(target=lease._beat, name=f"lease {lease.url}", daemon=True)
        lease._thread.start()
        return lease

    # ------------------------------------------------------------------ file access
    def _read(self):
        """The lease file's record: None when there is none, ``{}`` when it is not JSON."""
        try:
            raw = cat_whole(self.fs, self.path)
        except (
            FileNotFoundError,
            NotADirectoryError,
        ):  # the write then says what is wrong with the folder
            return None
        try:
            return json.loads(raw)
        except ValueError:  # empty, truncated or binary: not a lease this library wrote
            return {}

    def _write(self, exclusive):
        """Write this lease's record; with ``exclusive``, only if no lease file exists.

        Returns False when ``exclusive`` found a lease file, True when written. An I/O failure
        raises the same OSError class with a message that names the lease and the checkpoint.
        """
        try:
            return self._put(json.dumps(self.record).encode(), exclusive)
        except OSError as err:
            cause = (
                f"{err.strerror}: {err.filename!r}" if err.strerror and err.filename else str(err)
            )
            raise type(err)(
                f"Cannot write the lease {self.url!r} of the checkpoint at {self.checkpoint_url!r} "
                f"({cause}): the checkpoint's folder must be writable."
            ) from err

    def _put(self, data, exclusive):
        if self.location.is_local:
            # written aside and moved into place: a reader never sees half a record
            target = self.location.local_path
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
            partial.write_bytes(data)
            try:
                if exclusive:
                    os.link(partial, target)  # refuses to replace an existing file
                else:
                    os.replace(partial, target)
            except FileExistsError:
                return False
            finally:
                partial.unlink(missing_ok=True)
            return True
        self.fs.makedirs(posixpath.dirname(self.path), exist_ok=True)
        if exclusive:
            try:
                with self.fs.open(
                    self.path, "xb"
                ) as file:  # one request on stores with conditional writes
                    file.write(data)
                return True
            except FileExistsError:
                return False
            except (NotImplementedError, ValueError):  # no exclusive mode here: check, then write
                if self.fs.exists(self.path):
                    return False
        self.fs.pipe_file(self.path, data)
        return True

    # ------------------------------------------------------------------ holding
    def _take(self):
        for _ in range(
            3
        ):  # a lease can appear or vanish between the read and the write: look again
            record = self._read()
            if record is not None:
                reason = abandoned_because(record)
                if reason is None:
                    raise CheckpointInUseError(
                        in_use_message(self.checkpoint_url, record, self.url)
                    )
                holder = (
                    f"{record.get('host')}/{record.get('pid')}" if isinstance(record, dict) else "?"
                )
                logger.warning("Taking over the lease %s of %s: %s.", self.url, holder, reason)
            if self._write(exclusive=record is None):
                self.verify()
                return
        raise CheckpointInUseError(
            f"The checkpoint at {self.checkpoint_url!r} is being taken by other fits at this "
            f"moment (its lease {self.url!r} keeps changing): wait for them, or use another "
            "checkpoint URL."
        )

    def verify(self):
        """Check that this process still holds the lease (before writing a checkpoint).

        Raises
        ------
        CheckpointInUseError
            Another fit has taken the lease over (this one stalled past ``expires_after``).
        """
        if self._lost is not None:
            raise self._lost
        record = self._read()
        if record == self.record or (
            isinstance(record, dict) and record.get("token") == self.record["token"]
        ):
            return
        if record is None:
            self._lost = CheckpointInUseError(
                f"The lease {self.url!r} of this fit on the checkpoint at "
                f"{self.checkpoint_url!r} was removed by someone else: stopping rather than "
                "writing a checkpoint another fit may be writing."
            )
        elif _valid_record(record):
            self._lost = CheckpointInUseError(
                in_use_message(self.checkpoint_url, record, self.url)
                + " (This fit's own lease was taken over: it was not renewed in time.)"
            )
        else:
            self._lost = CheckpointInUseError(
                f"The lease {self.url!r} of this fit on the checkpoint at "
                f"{self.checkpoint_url!r} was overwritten with something else: stopping rather "
                "than writing a checkpoint another fit may be writing."
            )
        raise self._lost

    def _renew(self):
        self.verify()
        self.record = dict(self.record, renewed=time.time())
        self._write(exclusive=False)

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            try:
                self._renew()
            except CheckpointInUseError:
                return  # verify() keeps the error for the next checkpoint write
            except Exception as err:  # noqa: BLE001 - a transient I/O error: the next beat tries again
                logger.warning("Could not renew the lease %s: %s", self.url, err)

    def release(self):
        """Stop renewing and remove the lease file if it is still this process's. Never raises."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        _HELD.discard(self.record["token"])
        try:
            record = self._read()
            if isinstance(record, dict) and record.get("token") == self.record["token"]:
                self.fs.rm_file(self.path)
        except Exception as err:  # noqa: BLE001 - a lease left behind expires by itself
            logger.warning(
                "Could not remove the lease %s (it expires by itself): %s", self.url, err
            )
