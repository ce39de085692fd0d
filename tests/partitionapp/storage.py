"""A file storage that fails on write, for the archive's fault tests."""

from __future__ import annotations

from typing import IO, Any

from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage


class FailingStorage(FileSystemStorage):
    """``FileSystemStorage`` whose writes of names containing ``fail_on`` raise ``OSError``.

    With ``partial=True`` the first half of the content is written under the name first, as a
    connection lost in the middle of an upload leaves it.
    """

    def __init__(self, *, fail_on: str = "", partial: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fail_on = fail_on
        self.partial = partial

    def save(self, name: str | None, content: IO[Any], max_length: int | None = None) -> str:
        if name is None or self.fail_on not in name:
            return super().save(name, content, max_length)
        if self.partial:
            content.seek(0)
            data = content.read()
            super().save(name, ContentFile(data[: len(data) // 2]), max_length)
        raise OSError(f"simulated storage failure writing {name}")
