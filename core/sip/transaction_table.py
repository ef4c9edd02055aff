"""The transaction layer: every live transaction by key, bounded, and one clock for all of them.

Incoming messages are routed to their transaction by the §17.1.3 / §17.2.3 keys; what no
transaction owns comes back as `Unmatched` for the route to handle. The TU creates transactions
(`new_server`, `new_client`) and talks to them through the table (`respond`, `transport_error`,
`terminate`), so the table sees every change to a transaction's deadline and every termination:
terminated transactions leave the table in the same call that terminated them.

Timers: one heap of (deadline, sequence, transaction) entries with lazy deletion. When a
transaction's earliest deadline changes the table pushes a new entry and records it in
`transaction.scheduled_at`; an entry whose deadline no longer equals that is stale and skipped
when it surfaces. So a retransmission costs one heap push, a cancelled timer costs nothing until
its old deadline, and the heap is rebuilt when stale entries outnumber live ones. The asyncio
layer arms one `loop.call_at(next_deadline())` and calls `on_timer(now)` when it fires.

Bounded: new server transactions are refused once the table holds `max_transactions` minus a
reserve kept for client transactions, so calls already admitted can still be forwarded (and
forked) under load; client transactions are refused only at `max_transactions`. Either refusal
raises `TransactionTableFull`, which carries the 503 to answer.
"""

from __future__ import annotations

import itertools
from heapq import heapify, heappop, heappush
from typing import Final

from core.sip.errors import SipParseError
from core.sip.fields import MAGIC_COOKIE, Via
from core.sip.message import Request, Response
from core.sip.timers import TimerSettings
from core.sip.transaction import (
    Action,
    State,
    Transaction,
    TransportFlow,
    Unmatched,
    cancel_target_key,
    client_key,
    server_key,
)
from core.sip.transaction_client import ClientTransaction, new_client_transaction
from core.sip.transaction_server import (
    ServerInviteTransaction,
    ServerTransaction,
    new_server_transaction,
)

# Read natively where it is compared: a member looked up on the enum class each time is a
# generic attribute fetch, and the table compares with it on every settle and timer check.
_TERMINATED: Final = State.TERMINATED


class TransactionTableFull(Exception):
    """No room for another transaction. Carries the answer: 503, with a Retry-After hint."""

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__("transaction table full")
        self.status = 503
        self.reason = "Service Unavailable"
        self.retry_after = retry_after


class TransactionTable:
    """Live transactions by key, with their timers on one heap. Not thread-safe: one loop."""

    __slots__ = (
        "_branches",
        "_clients",
        "_heap",
        "_last_key",
        "_last_request",
        "_last_via",
        "_sequence",
        "_servers",
        "client_reserve",
        "max_transactions",
        "refused",
        "timers",
    )

    def __init__(
        self,
        timers: TimerSettings | None = None,
        *,
        max_transactions: int = 65_536,
        client_reserve: int | None = None,
    ) -> None:
        if max_transactions < 1:
            raise ValueError("max_transactions must be at least 1")
        self.timers = timers if timers is not None else TimerSettings()
        self.max_transactions = max_transactions
        # Default: a quarter of the table is kept for client transactions.
        reserve = max_transactions // 4 if client_reserve is None else client_reserve
        if not 0 <= reserve < max_transactions:
            raise ValueError("client_reserve must be in [0, max_transactions)")
        self.client_reserve = reserve
        self.refused = 0  # new transactions turned away because the table was full
        self._servers: dict[tuple[object, ...], ServerTransaction] = {}
        self._clients: dict[tuple[object, ...], ClientTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._sequence = 0  # heap entries' tie-breaker, counted here (not a generic next())
        # How many live server transactions hold each RFC 3261 branch (the first element of
        # their key): a request whose branch is not here matches none of them, which nearly
        # every new request proves with this one look-up instead of building its whole key.
        self._branches: dict[str, int] = {}
        # The last request match_request found unmatched: new_server keys it as it arrived,
        # from its key (the general path built one) or else its top Via as parsed then.
        self._last_request: Request | None = None
        self._last_via: Via | None = None
        self._last_key: tuple[object, ...] | None = None

    def __len__(self) -> int:
        return len(self._servers) + len(self._clients)

    @property
    def server_count(self) -> int:
        return len(self._servers)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    # -- lookups (pure) --------------------------------------------------------------------
    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction `request` belongs to (a retransmission, or the ACK of a
        non-2xx final), or None. Raises SipParseError when it has no Via or CSeq."""
        via = request.top_via
        if via is not None:
            branch = via.params.get("branch")
            if (
                branch is not None
                and branch.startswith(MAGIC_COOKIE)
                and branch not in self._branches
            ):
                # An RFC 3261 key starts with this branch, and no live key does: no match.
                # The checks server_key makes are still made, so the same requests raise.
                if request.cseq is None:
                    raise SipParseError("Missing CSeq")
                self._last_request = request
                self._last_via = via
                self._last_key = None
                return None
        key = server_key(request)
        transaction = self._servers.get(key)
        if transaction is None:
            self._last_request = request
            self._last_key = key
            return None
        if request.method == "ACK" and not (
            isinstance(transaction, ServerInviteTransaction)
            and transaction.acknowledged_by(request)
        ):
            return None
        return transaction

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction `response` answers (§17.1.3), or None. Raises SipParseError
        for a malformed Via or CSeq."""
        transaction = self._match_as_sent(response)
        if transaction is not None:
            return transaction
        key = client_key(response)
        return None if key is None else self._clients.get(key)

    def _match_as_sent(self, response: Response) -> ClientTransaction | None:
        """The client transaction whose request carried exactly the Via lines and the CSeq
        `response` carries, found without parsing any of them; None sends the caller to
        `client_key`.

        A UAS copies the Vias and the CSeq as it got them (§8.2.6.2), so a response nearly
        always holds the text of its request's. The branch is read off the top line as we
        write our own Vias (`;branch=` last, no comma) and the method off the CSeq's end,
        only to find the candidate: the match is then proved by the candidate's request
        holding the very same lines, which parse (it was sent with them) to the same top Via
        and CSeq, hence to the same key `client_key` would give. Any other shape, or no such
        candidate, takes the general path, which parses them."""
        headers = response.headers
        lines = headers.get_all("via")
        cseq = headers.get("cseq")
        if not lines or cseq is None:
            return None
        top = lines[0]
        start = top.find(";branch=")
        if start < 0:
            return None
        start += 8
        end = top.find(";", start)
        branch = top[start:] if end < 0 else top[start:end]
        transaction = self._clients.get((branch, cseq[cseq.rfind(" ") + 1 :]))
        if transaction is None:
            return None
        sent = transaction.request.headers
        if sent.get("cseq") != cseq or sent.get_all("via") != lines:
            return None
        return transaction

    def match_cancel(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL cancels (§9.2), if it is still here."""
        transaction = self._servers.get(cancel_target_key(cancel))
        return transaction if isinstance(transaction, ServerInviteTransaction) else None

    def receive_retransmission(self, request: Request, now: float) -> list[Action] | None:
        """`receive_request` for a caller that only wants to know whether a transaction owns
        `request`: its actions, or None (where receive_request says `[Unmatched]`, built for
        nothing when the caller goes on to route the request itself)."""
        transaction = self.match_request(request)
        if transaction is None:
            return None
        actions = transaction.receive_request(request, now)
        self._settle(transaction)
        return actions

    # -- messages from the network -------------------------------------------------------
    def receive_request(self, request: Request, flow: TransportFlow, now: float) -> list[Action]:
        """A request from the network. Owned by a transaction → that transaction's actions
        (resend the last response, absorb, pass an ACK up). Otherwise `[Unmatched]`: the route
        decides, and calls `new_server` for a request it handles statefully."""
        transaction = self.match_request(request)
        if transaction is None:
            return [Unmatched(request, flow)]
        actions = transaction.receive_request(request, now)
        self._settle(transaction)
        return actions

    def receive_response(self, response: Response, flow: TransportFlow, now: float) -> list[Action]:
        """A response from the network: to its client transaction, else `[Unmatched]`."""
        transaction = self.match_response(response)
        if transaction is None:
            return [Unmatched(response, flow)]
        actions = transaction.receive_response(response, now)
        self._settle(transaction)
        return actions

    # -- the TU's side -----------------------------------------------------------------------
    def new_server(
        self,
        request: Request,
        flow: TransportFlow,
        now: float,
        *,
        reliable: bool | None = None,
        user_data: object = None,
    ) -> tuple[ServerTransaction, list[Action]]:
        """A server transaction for a request `receive_request` found unmatched.

        Raises TransactionTableFull (answer 503 statelessly), ValueError for an ACK or a request
        a live transaction already owns.
        """
        if len(self) >= self.max_transactions - self.client_reserve:
            self.refused += 1
            raise TransactionTableFull()
        key = self._arrival_key(request)
        if key in self._servers:
            raise ValueError("request belongs to a live server transaction")
        transaction = new_server_transaction(
            request, flow, timers=self.timers, reliable=reliable, user_data=user_data, key=key
        )
        self._servers[key] = transaction
        if len(key) == 4:
            branch = key[0]
            assert isinstance(branch, str)
            branches = self._branches
            branches[branch] = branches.get(branch, 0) + 1
        actions = transaction.start(now)
        self._settle(transaction)
        return transaction, actions

    def _arrival_key(self, request: Request) -> tuple[object, ...]:
        """The server key of `request` as it arrived: what match_request found unmatched
        is keyed from what it read then (the route may since have changed, say, its
        Request-URI); any other request is keyed now."""
        if self._last_request is not request:
            return server_key(request)
        key = self._last_key
        if key is not None:
            return key
        via = self._last_via
        assert via is not None
        # server_key's RFC 3261 key, for the branch match_request found starting with the cookie.
        method = "INVITE" if request.method == "ACK" else request.method
        return via.params.get("branch"), via.host.lower(), via.port, method

    def new_client(
        self,
        request: Request,
        flow: TransportFlow,
        now: float,
        *,
        reliable: bool | None = None,
        user_data: object = None,
    ) -> tuple[ClientTransaction, list[Action]]:
        """A client transaction sending `request` (its top Via carries our fresh branch).
        The actions hold the first Send. Raises TransactionTableFull, or ValueError for an ACK,
        a request without an RFC 3261 branch, or a branch already in use."""
        if len(self) >= self.max_transactions:
            self.refused += 1
            raise TransactionTableFull()
        transaction = new_client_transaction(
            request, flow, timers=self.timers, reliable=reliable, user_data=user_data
        )
        if transaction.key in self._clients:
            raise ValueError("branch already used by a live client transaction")
        self._clients[transaction.key] = transaction
        actions = transaction.start(now)
        self._settle(transaction)
        return transaction, actions

    def respond(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[Action]:
        """The TU answers on a server transaction."""
        actions = transaction.respond(response, now)
        self._settle(transaction)
        return actions

    def transport_error(self, transaction: Transaction, now: float) -> list[Action]:
        """The transport failed to send one of `transaction`'s messages."""
        actions = transaction.on_transport_error(now)
        self._settle(transaction)
        return actions

    def terminate(self, transaction: Transaction) -> list[Action]:
        """The TU abandons `transaction` (e.g. a cancelled INVITE that never got a final)."""
        actions = transaction.terminate()
        self._settle(transaction)
        return actions

    # -- time ---------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """The earliest timer across all transactions, or None when none runs."""
        heap = self._heap
        while heap:
            deadline, _sequence, transaction = heap[0]
            if transaction.scheduled_at == deadline and transaction.state is not _TERMINATED:
                return deadline
            heappop(heap)
        return None

    def on_timer(self, now: float) -> list[Action]:
        """Fire every timer due at `now`, in deadline order."""
        actions: list[Action] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _sequence, transaction = heappop(heap)
            if transaction.scheduled_at != deadline or transaction.state is _TERMINATED:
                continue  # stale entry
            transaction.scheduled_at = None
            actions.extend(transaction.on_timer(now))
            self._settle(transaction)
        return actions

    # -- bookkeeping ----------------------------------------------------------------------
    def _settle(self, transaction: Transaction) -> None:
        """After any input: drop a terminated transaction, or requeue a changed deadline."""
        if transaction.state is _TERMINATED:
            key = transaction.key
            if self._clients.get(key) is transaction:
                del self._clients[key]
            elif self._servers.get(key) is transaction:
                del self._servers[key]
                if len(key) == 4:
                    self._forget_branch(key[0])
            transaction.scheduled_at = None
            return
        deadline = transaction.next_deadline()
        if deadline == transaction.scheduled_at:
            return
        transaction.scheduled_at = deadline
        if deadline is not None:
            sequence = self._sequence + 1
            self._sequence = sequence
            heappush(self._heap, (deadline, sequence, transaction))
            if len(self._heap) > 2 * (len(self._servers) + len(self._clients)) + 1_024:
                self._compact()

    def _forget_branch(self, branch: object) -> None:
        """One server transaction fewer holds `branch`."""
        assert isinstance(branch, str)
        branches = self._branches
        held = branches[branch]
        if held == 1:
            del branches[branch]
        else:
            branches[branch] = held - 1

    def _compact(self) -> None:
        """Rebuild the heap from live transactions, dropping every stale entry."""
        heap: list[tuple[float, int, Transaction]] = []
        live = itertools.chain(self._servers.values(), self._clients.values())
        for transaction in live:
            deadline = transaction.scheduled_at
            if deadline is not None:
                self._sequence += 1
                heap.append((deadline, self._sequence, transaction))
        heapify(heap)
        self._heap = heap
