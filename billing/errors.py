"""The billing package's exceptions: one root, ``BillingError``.

Errors a user can fix carry the place to fix it (a tariff key, a rate-sheet
row and column) in their message; ``http_status`` is what the HTTP API answers.
"""

from __future__ import annotations


class BillingError(Exception):
    """Root of every billing error."""

    http_status = 400


class TariffError(BillingError):
    """A tariff that cannot be used; the message names the key."""


class NoRateError(BillingError):
    """A call the tariff has no price for (unknown destination, uncovered period)."""

    http_status = 422


class RateSheetError(BillingError):
    """A bad row in a carrier rate sheet; names the row (1 = header) and the column."""

    def __init__(self, row: int, column: str, problem: str) -> None:
        super().__init__(f"row {row}, column {column!r}: {problem}")
        self.row = row
        self.column = column
        self.problem = problem


class AccountError(BillingError):
    """An unknown account, or one that cannot be created or changed as asked."""

    http_status = 404


class LedgerError(BillingError):
    """The ledger refused an operation (bad amount, conflicting reference)."""
