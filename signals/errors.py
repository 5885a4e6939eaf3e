"""The one exception type for bad user input.

Why a dedicated type: the CLI turns exactly these into a single readable line and a non-zero exit,
while any other exception is a bug and keeps its traceback. The message always says *where* the
problem is (file, participant id, field) so a user can fix their data without reading our code.
"""

from __future__ import annotations

from pathlib import Path


class SpirolmInputError(ValueError):
    """Input data or configuration that spirolm cannot use.

    Args:
        problem: what is wrong, in plain words (e.g. ``"non-numeric token 'x1' at position 7"``).
        file: the file the bad value came from, if any.
        eid: the participant id, if the problem is participant-specific.
        field: the field / column name (e.g. ``"3066-0.1"`` or ``"fev1_l"``).
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        eid: object | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = None if file is None else str(file)
        self.eid = eid
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.file is not None:
            where.append(f"file {self.file}")
        if self.eid is not None:
            where.append(f"participant {self.eid}")
        if self.field is not None:
            where.append(f"field {self.field}")
        return (": ".join(where) + ": " if where else "") + self.problem


class ImplausibleBlowError(SpirolmInputError):
    """A blow value that is readable but cannot come from a human expiration (e.g. a negative volume).

    Why a subclass: callers that turn a bad blow into a rejected blow (the UKB importer, cohort QC)
    record it as ``implausible_volume`` instead of ``parse_error``, so an artefact and a syntax error
    are counted apart; everyone else handles it as any :class:`SpirolmInputError`.
    """
