"""Reading ``batch_create``'s input into batches, and encoding JSON values as they are read.

A row holding a list or a dict (a JSON value) is tracked by Python's garbage collector; one kept
for a whole batch outlives two collections and reaches the oldest generation, and thousands per
batch set off full collections of the whole process (about 1 µs a row on the benchmark machine).
Encoded as they are read, a batch's rows hold only strings, numbers and bytes, which the collector
stops tracking, and the caller's lists and dicts die young.

Read a column at a time with loops in C, this costs less than the collections it saves, with one
connection too (there it runs while the server waits): 300,000 dicts went 8.6% faster, tuples 5.8%.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from operator import itemgetter
from typing import Any

from django_scaleops.bulk.columns import decode_json, encode_json_column

# Rows are read this many at a time: a chunk of tuples or dicts is checked and its JSON values
# encoded while the caller's row objects are still young. Fewer of them alive at a time means
# fewer survive a collection: with 256, the collector cost 0.62 µs a row of 300,000 dicts
# (workers=2), with 64 0.30 µs, and the call was 6% faster.
READ_CHUNK_ROWS = 64


class EncodedBatch(list[tuple[Any, ...]]):
    """A batch whose rows became, as they were read, tuples with their JSON values encoded.

    ``keys``: the rows were dicts with these keys and the tuples hold their values in that order;
    None: they were tuples of ``fields=``. ``encoded``: positions of the JSON values, now the
    ``bytes`` of ``encode_json`` (None stays None). Slices (bisection) stay ``EncodedBatch``.
    """

    __slots__ = ("encoded", "keys")

    def __init__(self, rows: Iterable[tuple[Any, ...]], keys: tuple[str, ...] | None, encoded: tuple[int, ...]) -> None:
        super().__init__(rows)
        self.keys = keys
        self.encoded = encoded

    def __getitem__(self, index: Any) -> Any:
        found = super().__getitem__(index)
        return EncodedBatch(found, self.keys, self.encoded) if isinstance(index, slice) else found


def same_row(row: Any) -> Any:
    """A row that already is its values."""
    return row


class RowEncoder:
    """Reads chunks of tuples of ``width`` (``keys`` None) or of dicts with ``keys`` into tuples of
    values, with the JSON values at positions ``encoded`` encoded."""

    def __init__(self, keys: tuple[str, ...] | None, width: int, encoded: tuple[int, ...]) -> None:
        self.keys = keys
        self.encoded = encoded
        self.row_types = {tuple if keys is None else dict}
        self.widths = {width}
        self.values: Callable[[Any], Sequence[Any]]
        if keys is None:
            self.values = same_row
        elif len(keys) == 1:  # itemgetter of one key gives the value, not a tuple
            only = keys[0]
            self.values = lambda row: (row[only],)
        else:
            self.values = itemgetter(*keys)

    def encode_chunk(self, chunk: list[Any]) -> list[tuple[Any, ...]] | None:
        """The chunk's rows as tuples with their JSON values encoded, or None if a row is of another
        form. Raises what json.dumps raises for a value it refuses.

        Column by column, with loops in C (``set``, ``map``, ``zip``): this runs over every row
        that the workers write, on the thread that also runs the caller's generator.
        """
        if set(map(type, chunk)) != self.row_types or set(map(len, chunk)) != self.widths:
            return None
        rows: list[Any] = chunk
        if self.keys is not None:
            try:  # as many keys as ``keys``, and each of them: the same keys
                rows = list(map(self.values, chunk))
            except KeyError:
                return None
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
        for position in self.encoded:
            columns[position] = encode_json_column(columns[position])
        return list(zip(*columns, strict=True))

    def restore(self, encoded_row: tuple[Any, ...]) -> Any:
        """The row as given (JSON values decoded: equal, and json.dumps gives the same text)."""
        values = list(encoded_row)
        for position in self.encoded:
            values[position] = decode_json(values[position])
        return tuple(values) if self.keys is None else dict(zip(self.keys, values, strict=True))


def read_batches(
    rows: Iterable[Any], size: int, encoder_for: Callable[[Any], RowEncoder | None]
) -> Iterator[list[Any]]:
    """Lists of up to ``size`` rows, read lazily (a generator is never materialised).

    A batch whose first row ``encoder_for`` gives an encoder for comes as an ``EncodedBatch`` when
    every row of the batch is of that form; any other batch as read.
    """
    iterator = iter(rows)
    while chunk := list(islice(iterator, min(size, READ_CHUNK_ROWS))):
        encoder = encoder_for(chunk[0])
        if encoder is None:
            chunk.extend(islice(iterator, size - len(chunk)))
            yield chunk
        else:
            yield _read_encoded(chunk, iterator, size, encoder)


def _read_encoded(chunk: list[Any], iterator: Iterator[Any], size: int, encoder: RowEncoder) -> list[Any]:
    """The rest of a batch that starts with ``chunk``, encoded ``READ_CHUNK_ROWS`` rows at a time.

    If a row of another form turns up, or a value json.dumps refuses, the batch is given as read
    instead (the rows already encoded restored), for the usual road to write or report.
    """
    batch = EncodedBatch((), encoder.keys, encoder.encoded)
    while True:
        try:
            encoded = encoder.encode_chunk(chunk)
            if encoded is None:
                raise TypeError("a row of another form")
        except Exception:
            rows: list[Any] = [encoder.restore(values) for values in batch]
            rows.extend(chunk)
            rows.extend(islice(iterator, size - len(rows)))
            return rows
        batch.extend(encoded)
        if len(batch) >= size:
            return batch
        chunk = list(islice(iterator, min(size - len(batch), READ_CHUNK_ROWS)))
        if not chunk:
            return batch
