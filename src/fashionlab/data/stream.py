"""Images read from their files while training runs (--data-loading stream), in the same batches as from memory.

`FileImages` stands for a uint8 image tensor [N, H, W] or [N, C, H, W] whose rows are still files: it has the
tensor's len, shape and ndim, `take(idx)` selects rows without reading them, and indexing (an int, a slice or an
index tensor) decodes those rows then. `batches(x, index_batches)` yields x[b] for each b, the same tensors from a
tensor in memory and from FileImages, where a torch DataLoader's worker processes decode whole batches ahead of the
training step (decode + resize in the workers; augmentation stays batched on the device). The batch order is the
caller's, so the two ways of loading give the same results; under torchrun each rank already asks only for its
share of every batch (train.py slices the epoch's order by rank, as a DistributedSampler would).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch

from fashionlab.errors import DataError
from fashionlab.imageprep import read_dataset_image

LOADER_WORKERS = 2  # processes decoding ahead of training: enough to keep a small CNN busy on 2-4 cores
PREFETCH = 4  # batches each worker decodes ahead


class FileImages:
    """Image files, prepared (imageprep.read_dataset_image) as `mode` at `size` only when indexed."""

    def __init__(self, paths: Sequence[str], mode: str, size: tuple[int, int], labels: Sequence[str] = ()):
        self.paths = tuple(paths)
        self.mode, self.size = mode, (int(size[0]), int(size[1]))
        self.labels = tuple(labels) or self.paths  # how a file is named in an error (relative path)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def shape(self) -> tuple[int, ...]:
        h, w = self.size
        return (len(self), h, w) if self.mode == "L" else (len(self), 3, h, w)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def dtype(self) -> torch.dtype:
        return torch.uint8

    def take(self, idx) -> FileImages:
        """The rows `idx` (index tensor or sequence), still unread."""
        rows = torch.as_tensor(idx).flatten().tolist()
        return FileImages([self.paths[i] for i in rows], self.mode, self.size, [self.labels[i] for i in rows])

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self._read([key])[0]
        if isinstance(key, slice):
            return self._read(range(len(self))[key])
        return self._read(torch.as_tensor(key).cpu().flatten().tolist())

    def _read(self, rows: Iterable[int]) -> torch.Tensor:
        images = []
        for i in rows:
            got = read_dataset_image(self.paths[i], self.mode, self.size)
            if got.error is not None:  # the file changed after the dataset was checked
                raise DataError(f"{self.labels[i]}: {got.error} (it was readable when the dataset was checked)")
            if got.pixels.shape[:2] != self.size:
                raise DataError(f"{self.labels[i]} is now {got.pixels.shape[1]}x{got.pixels.shape[0]}, not the "
                                f"{self.size[1]}x{self.size[0]} it was when the dataset was checked")
            images.append(got.pixels)
        if not images:
            return torch.empty((0, *self.shape[1:]), dtype=torch.uint8)
        a = np.stack(images)
        if a.ndim == 4:
            a = a.transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(a))


class _Batches(torch.utils.data.Dataset):
    """Batch i of a DataLoader: the images of index_batches[i], decoded in a worker."""

    def __init__(self, images: FileImages, index_batches: Sequence):
        self.images = images
        self.index_batches = [b if isinstance(b, slice) else torch.as_tensor(b).cpu() for b in index_batches]

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[self.index_batches[i]]


def batches(x, index_batches: Sequence, *, workers: int = LOADER_WORKERS) -> Iterator[torch.Tensor]:
    """x[b] for each index tensor b, in order: indexed from a tensor, decoded ahead by `workers` DataLoader
    processes from FileImages (0: in this process)."""
    if not isinstance(x, FileImages):
        for b in index_batches:
            yield x[b.to(x.device) if isinstance(b, torch.Tensor) else b]
        return
    workers = min(workers, len(index_batches))
    # Its own generator: a DataLoader otherwise draws its workers' base seed from torch's global one, and every
    # epoch would shift the dropout masks and augmentations that follow, so stream would not train as memory does.
    loader = torch.utils.data.DataLoader(_Batches(x, index_batches), batch_size=None, shuffle=False,
                                         num_workers=workers, prefetch_factor=PREFETCH if workers else None,
                                         generator=torch.Generator().manual_seed(0))
    yield from loader


def loader_workers(data_workers: int | None) -> int:
    """DataLoader worker processes for --data-workers (None: LOADER_WORKERS)."""
    return LOADER_WORKERS if data_workers is None else data_workers


def ranges(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of at most batch_size rows covering 0..n."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def materialize(x) -> torch.Tensor:
    """A uint8 tensor of all of x (FileImages decoded, by workers)."""
    if not isinstance(x, FileImages):
        return x
    parts = list(batches(x, ranges(len(x), 1024)))
    return torch.cat(parts) if parts else x[0:0]


def sha256_of(x, labels: torch.Tensor) -> str:
    """sha256 of the images' bytes (row by row, as one contiguous tensor's) then the labels': a test set's identity,
    the same whether its images are in memory or in files."""
    h = hashlib.sha256()
    if isinstance(x, FileImages):
        for part in batches(x, ranges(len(x), 1024)):
            h.update(part.contiguous().numpy().tobytes())
    else:
        h.update(x.contiguous().numpy().tobytes())
    h.update(labels.contiguous().numpy().tobytes())
    return h.hexdigest()
