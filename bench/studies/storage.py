"""A study's Optuna storage, sampler and pruner: opening (and repairing) the storage, the lock that
serialises preparation, creating or loading the study.

The storage is an Optuna RDB URL (PostgreSQL: a study shared by several machines) or a journal
file, by default next to a local MLflow store (safe for several processes on one machine).
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path

import optuna

from bench.studies import optuna_adapter
from bench.studies.spec import StudySpec
from bench.tracking import TrackingError, mask_uri, scrub

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

    `create=False` (reading, e.g. `study status`): a journal file that does not exist is an error,
    not a new empty file.
    """
    if "://" in url:
        return optuna.storages.RDBStorage(url)
    check_storage_url(url)
    path = Path(url)
    if not create and not path.is_file():
        raise TrackingError(f"no Optuna journal at {path} (run the study first, or give its storage)",
                            field="storage")
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = optuna_adapter.journal_backend(path)
    repair_journal(path, backend)
    return optuna.storages.JournalStorage(backend)


def repair_journal(path: Path, backend) -> int:
    """Set aside the records of a journal that a crash or a full disk cut short; returns bytes moved.

    Optuna reads the journal line by line and stops at the first line that is not JSON, so a
    cut-short last record (and anything appended after it) would make the whole study unreadable.
    Under Optuna's own journal lock (no writer is half-way), every line that does not parse is
    moved to `<journal>.corrupt` (kept, never silently dropped); when a complete record was
    appended right after a cut one on the same line, that record is kept.
    """
    if not path.exists() or not _scan(path.read_bytes())[1]:
        return 0  # the usual case, checked without blocking the writers
    with optuna_adapter.journal_file_lock(backend):
        kept, bad = _scan(path.read_bytes())  # again: the bad tail may have been a write in progress
        if not bad:
            return 0
        corrupt = path.with_name(path.name + ".corrupt")
        with open(corrupt, "ab") as f:
            f.write(b"\n".join(bad) + b"\n")
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(line + b"\n" for line in kept))
        tmp.replace(path)
    moved = sum(len(b) for b in bad)
    print(f"gan-bench: warning: {path}: {moved} bytes of {len(bad)} cut-short record(s) set aside in {corrupt} "
          "(a crash or a full disk mid-write); the complete records are kept", file=sys.stderr)
    return moved


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
    """A libpq conninfo string (`host=db password=...`) is not a journal path: refuse it, masked."""
    import re

    if "://" not in url and re.search(r"(?i)(^|\s)(host|dbname|user|password|port)\s*=", url):
        raise TrackingError(f"storage {mask_uri(url)!r}: a libpq key=value string is not an Optuna storage; "
                            "give a URL (postgresql+psycopg://user@host:5432/db, password in PGPASSWORD or "
                            "~/.pgpass) or a journal file path", field="storage")


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
