"""What a request to the core gives back: typed responses, and the reply that yields them.

Every request gets a :class:`Reply`, an iterator of :class:`Ack`, any number of
:class:`Progress`, then exactly one final :class:`Result` or :class:`Timeout`. These types are
apart from the :class:`~larpixdaq.runcontrol.operator.Operator` that fills them so that the
board conveniences (:mod:`larpixdaq.runcontrol.operator_boards`) can name them without
importing the Operator they extend.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Ack:
    """The core received the request."""

    request_id: str
    final: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Progress:
    """An intermediate step (a transition group done, a routine's progress)."""

    request_id: str
    data: dict[str, Any]
    final: bool = field(default=False, init=False)


@dataclass(frozen=True)
class Result:
    """The final answer: success or failure, a message for people, data for programs."""

    request_id: str
    success: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    final: bool = field(default=True, init=False)


@dataclass(frozen=True)
class Timeout:
    """No final answer arrived in time; the request may still complete at the core."""

    request_id: str
    message: str
    after_s: float
    success: bool = field(default=False, init=False)
    final: bool = field(default=True, init=False)
    data: dict[str, Any] = field(default_factory=dict, init=False)


Response = Ack | Progress | Result | Timeout


class ResponseSource(Protocol):
    """Where a :class:`Reply` gets its responses from (the Operator)."""

    address: str

    def _next_for(self, request_id: str, deadline: float) -> Response | None: ...

    def _abandon(self, request_id: str) -> None: ...


class Reply:
    """The responses to one request, as an iterator; ends after the final one."""

    def __init__(self, operator: ResponseSource, request_id: str, timeout: float) -> None:
        self.operator = operator
        self.id = request_id
        self.timeout = timeout
        self.final: Result | Timeout | None = None
        self._deadline = time.monotonic() + timeout

    def __iter__(self) -> Iterator[Response]:
        return self

    def __next__(self) -> Response:
        if self.final is not None:
            raise StopIteration
        response = self.operator._next_for(self.id, self._deadline)
        if response is None:
            response = Timeout(self.id, f"no answer from the core at {self.operator.address} "
                                        f"within {self.timeout:g} s", self.timeout)
            self.operator._abandon(self.id)
        if response.final:
            self.final = response
        return response

    def wait(self) -> Result | Timeout:
        for _ in self:
            pass
        return self.final


