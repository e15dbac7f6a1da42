"""A study's Optuna storage, sampler and pruner: opening (and repairing) the storage, the lock that
serialises preparation, creating or loading the study.

The storage is an Optuna RDB URL (PostgreSQL: a study shared by several machines) or a journal
file, by default next to a local MLflow store (safe for several processes on one machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import optuna

from bench.studies import optuna_adapter
from bench.errors import TrackingError
from bench.studies.spec import StudySpec
from bench.tracking import mask_uri, scrub

PREPARE_LOCK_KEY = 0x67616E62656E6368  # "ganbench": the PostgreSQL advisory lock that serialises `prepare`


def default_storage(tracking_uri: str) -> str:
    """A journal file next to a local MLflow store (safe for several processes on one machine)."""
    if tracking_uri.startswith("sqlite:///"):
        folder = Path(tracking_uri[len("sqlite:///"):]).parent
    else:
        folder = Path("mlruns")
    return str(folder / "optuna-journal.log")


def make_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """An Optuna storage URL (postgresql://, sqlite://, ...) or a journal file path.

    A path must be an Optuna journal or nothing yet: any other file is refused before anything
    writes to it. `create=False` (reading: `study status`, `dashboard`): a journal that does not
    exist is an error, not a new empty file, and nothing is written, not even a repair.
    """
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    check_storage_url(url)
    path = Path(url)
    if not create:
        if not path.is_file():
            raise TrackingError(f"no Optuna journal at {path} (run the study first, or give its storage)",
                                field="storage")
        return optuna.storages.JournalStorage(_readable_backend(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna_adapter.journal_backend(path)
    repair_journal(path, backend)
    return optuna.storages.JournalStorage(backend)


_JOURNAL_HEAD = re.compile(rb'^\{\s*"op_code"\s*:')  # how every record of Optuna's journal starts


def check_journal_path(path: Path) -> None:
    """A storage path is a journal file or nothing yet (then it is created): never another file.

    Only the first bytes are read: a journal's first record starts `{"op_code":` (a crash may cut
    it short, never change how it starts); an empty file is a journal not yet written.
    """
    if path.is_dir():
        raise TrackingError(f"storage {str(path)!r} is a folder, not an Optuna journal file; give a file path "
                            "such as mlruns/optuna-journal.log", field="storage")
    if not path.exists():
        return
    if not path.is_file():
        raise TrackingError(f"storage {str(path)!r} is not a regular file; give an Optuna journal file path",
                            field="storage")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head or _JOURNAL_HEAD.match(head):
        return
    what = "an SQLite database (an MLflow store?)" if head.startswith(b"SQLite format 3\0") else \
        "a file that is not an Optuna journal"
    raise TrackingError(f"storage {str(path)!r} is {what}: it starts with {head[:20]!r}, not a journal record. "
                        "Nothing was changed. Give the study's journal file, or a new path "
                        "(default: optuna-journal.log next to the MLflow store)", field="storage")


def repair_journal(path: Path, backend) -> int:
    """Set aside the records of a journal that a crash or a full disk cut short; returns bytes moved.

    Optuna reads the journal line by line and stops at the first line that is not JSON, so a
    cut-short last record (and anything appended after it) would make the whole study unreadable.
    Under Optuna's own journal lock (no writer is half-way), the whole file is first copied to
    `<journal>.<time>.orig` (byte for byte, so nothing is ever lost), the lines that do not parse
    are written to `<journal>.corrupt`, and the journal is replaced by its complete records; when a
    complete record was appended right after a cut one on the same line, that record is kept.
    """
    if not path.exists() or not _scan(path.read_bytes())[1]:
        return 0  # the usual case, checked without blocking the writers
    with optuna_adapter.journal_file_lock(backend):
        data = path.read_bytes()
        kept, bad = _scan(data)  # again: the bad tail may have been a write in progress
        if not bad:
            return 0
        original = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.orig")
        shutil.copy2(path, original)
        corrupt = path.with_name(path.name + ".corrupt")
        with open(corrupt, "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    moved = sum(len(b) for b in bad)
    print(f"gan-bench: warning: {path}: {moved} bytes of {len(bad)} record(s) that do not parse set aside in "
          f"{corrupt} (a crash or a full disk mid-write); the complete records are kept; the file as it was is "
          f"in {original}", file=sys.stderr)
    return moved


class _MemoryJournal(optuna.storages.journal.BaseJournalBackend):
    """A journal's complete records, read once, for commands that only read: nothing is written."""

    def __init__(self, records: list[dict]):
        self._records = records

    def read_logs(self, log_number_from: int):
        yield from self._records[log_number_from:]

    def append_logs(self, logs: list[dict]) -> None:
        raise TrackingError("this command only reads the study; its journal is not written", field="storage")


def _readable_backend(path: Path):
    """The journal's own backend when it is whole (it writes nothing while reading); else its complete
    records in memory, said once: the writing commands (`study run`) set the rest aside."""
    import json

    kept, bad = _scan(path.read_bytes())
    if not bad:
        return optuna_adapter.journal_backend(path)
    print(f"gan-bench: warning: {path}: {len(bad)} record(s) that do not parse are skipped for reading "
          "(left as they are; `gan-bench study run` sets them aside, keeping a copy of the file)",
          file=sys.stderr)
    return _MemoryJournal([json.loads(line) for line in kept])


def _scan(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """(the complete records, the cut-short bytes) of a journal's content."""
    kept, bad = [], []
    lines = data.split(b"\n")
    for i, line in enumerate(lines):
        if i == len(lines) - 1 and not line:
            continue  # the newline that ends the file
        good, junk = _salvage(line)  # a whole last record without its newline is kept (and completed)
        if junk:
            bad.append(junk)
        if good is not None:
            kept.append(good)
    return kept, bad


def _salvage(line: bytes) -> tuple[bytes | None, bytes]:
    """(a complete JSON record in the line or None, the bytes that are not part of it)."""
    import json

    try:
        json.loads(line)
        return line, b""
    except ValueError:
        pass
    start = line.rfind(b'{"op_code"')
    while start > 0:  # a cut record followed by a whole one on the same line
        try:
            json.loads(line[start:])
            return line[start:], line[:start]
        except ValueError:
            start = line.rfind(b'{"op_code"', 0, start)
    return None, line


def read_storage(url: str) -> optuna.storages.BaseStorage:
    """An existing storage for reading (`study status`): any failure is one line naming the (masked) URL."""
    try:
        return make_storage(url, create=False)
    except TrackingError:
        raise
    except Exception as e:
        raise storage_error(url, e) from None


def storage_error(storage_url: str, e: BaseException) -> TrackingError:
    """A storage that cannot be opened or used, as one line naming its (masked) URL."""
    return TrackingError(scrub(f"Optuna storage {mask_uri(storage_url)!r} is not usable: {e}", storage_url))


def check_storage_url(url: str) -> None:
    """Refuse what is not an Optuna storage before anything is written: a libpq conninfo string
    (`host=db password=...`, masked), or a path to a file that is not a journal."""
    if "://" in url:
        return
    if re.search(r"(?i)(^|\s)(host|dbname|user|password|port)\s*=", url):
        raise TrackingError(f"storage {mask_uri(url)!r}: a libpq key=value string is not an Optuna storage; "
                            "give a URL (postgresql+psycopg://user@host:5432/db, password in PGPASSWORD or "
                            "~/.pgpass) or a journal file path", field="storage")
    check_journal_path(Path(url))


@contextlib.contextmanager
def exclusive(url: str):
    """Serialise `prepare` across the processes and machines that share one storage.

    Two `study run`s started together would otherwise both create Optuna's tables on an empty
    database (one fails: duplicate key in pg_type), both create a parent run and both enqueue the
    grid. PostgreSQL: an advisory lock held by the connection, released by the server when its holder dies (kill -9
    included); journal file: an flock on a file next to it; other URLs: nothing (one machine).
    """
    if "://" not in url:
        import fcntl

        path = Path(url).with_name(Path(url).name + ".prepare.lock")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return
    import sqlalchemy

    conn = None  # stays None for other databases: no lock
    try:
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        if engine.dialect.name == "postgresql":
            conn = engine.connect()
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": PREPARE_LOCK_KEY})
    except Exception as e:
        raise TrackingError(scrub(f"Optuna storage {mask_uri(url)!r} is not usable: {e}", url)) from None
    try:
        yield
    finally:
        if conn is not None:
            with contextlib.suppress(Exception):  # closing the connection releases the lock anyway
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": PREPARE_LOCK_KEY})
            conn.close()
        engine.dispose()


def make_sampler(spec: StudySpec) -> optuna.samplers.BaseSampler:
    s = spec.sampler
    if s.type == "grid":
        return optuna.samplers.GridSampler({k: p.grid_values() for k, p in spec.search_space.items()}, seed=s.seed)
    if s.type == "tpe":
        return optuna.samplers.TPESampler(seed=s.seed, multivariate=True, group=True)
    if s.type == "gp":
        return optuna.samplers.GPSampler(seed=s.seed)
    return optuna.samplers.RandomSampler(seed=s.seed)


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.type == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=p.n_startup_trials, n_warmup_steps=p.n_warmup_steps)
    elif p.type == "hyperband":
        pruner = optuna.pruners.HyperbandPruner()
    else:
        return optuna.pruners.NopPruner()
    return optuna.pruners.PatientPruner(pruner, patience=p.patience) if p.patience else pruner


def open_study(spec: StudySpec, storage: optuna.storages.BaseStorage, create: bool = True) -> optuna.Study:
    """Create or load the study (`create=False`: load only, as workers do once `prepare` made it)."""
    if not create:
        return optuna.load_study(study_name=spec.name, storage=storage, sampler=make_sampler(spec),
                                 pruner=make_pruner(spec))
    return optuna.create_study(study_name=spec.name, storage=storage, load_if_exists=True,
                               sampler=make_sampler(spec), pruner=make_pruner(spec),
                               directions=list(spec.objective.directions))


def describe(study: optuna.Study, spec: StudySpec) -> None:
    """Name the objectives (optuna-dashboard, `optuna trials`, `study status` show eval/tarr, not
    value_0) and keep the study file's description, where Optuna tools look for it."""
    if study.metric_names != list(spec.objective.metrics):
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what its tools read
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(spec.objective.metrics))
    if study.user_attrs.get("description") != spec.description:
        study.set_user_attr("description", spec.description)
