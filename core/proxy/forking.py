"""The response context of a forwarded request (RFC 3261 §16.7): branches and the best answer.

A request the proxy forwards gets one server transaction towards the sender and one client
transaction per branch (one per registered contact when forking, one for an in-dialog
request). The context ties them together and decides what the sender hears:

- 100 Trying is hop by hop: the server transaction sent our own at once; a branch's is dropped.
- Other provisional responses go up as they arrive.
- Every 2xx goes up, from every branch (§16.7 step 5), and the first one cancels the branches
  still ringing (§16.7 step 10 / §16.10).
- A 6xx cancels the other branches but waits, like the other final responses, for every
  branch to finish; then the best one goes up (§16.7 step 6): a 6xx if any, else the lowest
  class, preferring within a class what the caller can act on (401/407/415/420/484) and least
  what says nothing (408, 480, 487, 503). A 503 goes up as 500: it would tell the caller that
  *we* are out of service. No final response at all (every branch timed out) is a 408.

What to do with the answer (send it, update the call) is the proxy's business; this module
only keeps score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.net.flow import Flow
from core.proxy.calls import Call
from core.sip.message import Request, Response, make_response, new_tag
from core.sip.transaction_client import ClientTransaction
from core.sip.transaction_server import ServerTransaction

# Within a class, what the caller can act on goes first, what says nothing goes last.
_ACTIONABLE = frozenset({401, 407, 415, 420, 484})
_UNINFORMATIVE = frozenset({408, 480, 487, 503})


def response_rank(status: int) -> tuple[int, int]:
    """Sort key of a final response for §16.7 step 6: lower is better."""
    response_class = 0 if status >= 600 else status // 100
    if status in _ACTIONABLE:
        preference = 0
    elif status in _UNINFORMATIVE:
        preference = 2
    else:
        preference = 1
    return response_class, preference


def relayed(response: Response) -> Response:
    """The response as it goes up: our Via (the top one) removed, all else untouched (§16.7
    step 3)."""
    headers = response.headers.copy()
    headers.pop_first_value("via")
    return Response(response.status, response.reason, headers, response.body, response.version)


# The two classes below write their __init__ out: a dataclass-generated one runs interpreted
# even when the class is compiled, at several times the cost, and every request builds them.
@dataclass(slots=True, eq=False, init=False)
class Branch:
    """One forwarded copy of the request and what became of it."""

    context: ResponseContext
    request: Request  # as sent: our Via on top, Request-URI of the target
    flow: Flow
    transaction: ClientTransaction | None = None
    provisional: bool = False  # a 1xx arrived: a CANCEL may be sent (§9.1)
    final: int = 0  # the final status (ours when it timed out or failed); 0 while pending
    cancel_pending: bool = False  # cancel as soon as a provisional response arrives
    cancelled: bool = False  # our CANCEL went out

    def __init__(self, context: ResponseContext, request: Request, flow: Flow) -> None:
        self.context = context
        self.request = request
        self.flow = flow
        self.transaction = None
        self.provisional = False
        self.final = 0
        self.cancel_pending = False
        self.cancelled = False

    @property
    def pending(self) -> bool:
        return self.final == 0


@dataclass(slots=True, eq=False, init=False)
class ResponseContext:
    """Everything about one forwarded request until the last branch is done."""

    server: ServerTransaction
    request: Request  # as received, with the sender's Via: the base of our own answers
    # To tag of the final responses we generate ourselves (408, 487, 500); "" until the first
    # one is built (`own_answer`): most forwarded requests never need it, and a fresh tag
    # costs a system call (os.urandom).
    local_tag: str = ""
    call: Call | None = None  # the call an initial INVITE set up
    branches: list[Branch] = field(default_factory=list)
    pending: int = 0  # branches without a final response
    final_sent: bool = False  # the sender has its final answer (a 2xx counts)
    answered: bool = False  # a 2xx went up
    cancelled: bool = False  # CANCEL, a 6xx, a 2xx or the ring timeout ended the forking
    best_status: int = 0
    best_response: Response | None = None  # a branch's answer in relayed form; None if ours
    best_reason: str = ""
    # (Call-ID, From tag, CSeq) of an INVITE whose 2xx went up: the ACK that will end it.
    ack_key: tuple[str, str, int] | None = None
    # The request's own CSeq and From values, read once for every response relayed up.
    caller_fields: tuple[str | None, str | None] | None = None

    def __init__(self, server: ServerTransaction, request: Request, local_tag: str = "") -> None:
        self.server = server
        self.request = request
        self.local_tag = local_tag
        self.call = None
        self.branches = []
        self.pending = 0
        self.final_sent = False
        self.answered = False
        self.cancelled = False
        self.best_status = 0
        self.best_response = None
        self.best_reason = ""
        self.ack_key = None
        self.caller_fields = None

    @property
    def is_invite(self) -> bool:
        return self.request.method == "INVITE"

    def add_branch(self, request: Request, flow: Flow) -> Branch:
        branch = Branch(self, request, flow)
        self.branches.append(branch)
        self.pending += 1
        return branch

    def branch_finished(self, branch: Branch, status: int) -> bool:
        """Record a branch's final status; True the first time (later ones are repeats)."""
        if branch.final:
            return False
        branch.final = status
        self.pending -= 1
        return True

    def consider(self, status: int, reason: str, response: Response | None) -> None:
        """Keep the better of this final answer and the best so far (§16.7 step 6)."""
        if self.best_status and response_rank(status) >= response_rank(self.best_status):
            return
        self.best_status = status
        self.best_reason = reason
        self.best_response = response

    def branches_to_cancel(self) -> list[Branch]:
        """Pending branches not cancelled yet; marks the context as no longer forking."""
        self.cancelled = True
        return [branch for branch in self.branches if branch.pending and not branch.cancelled]

    def best_answer(self, server_header: tuple[str, str]) -> Response:
        """The final response for the sender once every branch is done (§16.7 step 6)."""
        status = self.best_status or 408
        response = self.best_response
        if status == 503:
            # §16.7 step 6: a 503 would say the proxy itself is unavailable.
            if response is not None:
                return Response(500, None, response.headers, response.body, response.version)
            return self.own_answer(500, None, server_header)
        if response is not None:
            return response
        return self.own_answer(status, self.best_reason or None, server_header)

    def own_answer(
        self, status: int, reason: str | None, server_header: tuple[str, str]
    ) -> Response:
        """A final response we generate (§16.7 step 6 408, §16.10 487, §16.9 errors)."""
        tag = self.local_tag
        if not tag:
            tag = self.local_tag = new_tag()
        return make_response(self.request, status, reason, to_tag=tag, extra=[server_header])
