"""Build: the SIP core's per-message path compiled to C with mypyc.

Every module below runs for every datagram (parse, validate, authenticate, register, proxy).
mypyc compiles the type-annotated Python as it stands, which halves its CPU cost per message;
the source stays the one truth and runs unchanged without the compiler. Set
PBXTUI_PURE_PYTHON=1 to install without compiling (no C compiler at hand, or while changing
these modules: a stale compiled module would shadow the edited source).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED_MODULES = [
    "core/sip/address.py",
    "core/sip/digest.py",
    "core/sip/errors.py",
    "core/sip/fields.py",
    "core/sip/framing.py",
    "core/sip/headers.py",
    "core/sip/message.py",
    "core/sip/parser.py",
    "core/sip/timers.py",
    "core/sip/transaction.py",
    "core/sip/transaction_client.py",
    "core/sip/transaction_server.py",
    "core/sip/transaction_table.py",
    "core/sip/uri.py",
    "core/accounting/cdrs.py",
    "core/security/auth.py",
    "core/security/bans.py",
    "core/proxy/calls.py",
    "core/proxy/decisions.py",
    "core/proxy/dialog_relay.py",
    "core/proxy/dialogs.py",
    "core/trunks/dialplan.py",
    "core/security/flood.py",
    "core/net/flow.py",
    "core/proxy/forking.py",
    "core/trunks/gateways.py",
    "core/net/identity.py",
    "core/registrar/location.py",
    "core/registrar/natping.py",
    "core/net/addresses.py",
    "core/outbox.py",
    "core/route.py",
    "core/proxy/forwarder.py",
    "core/proxy/proxy.py",
    "core/proxy/stray.py",
    "core/registrar/registrar.py",
    "core/proxy/routing.py",
    "core/security/sanity.py",
    "core/security/scanners.py",
    "core/security/seclog.py",
    "core/security/guard.py",
    "core/security/strikes.py",
    "core/security/throttle.py",
    "core/trunks/tollfraud.py",
    "core/trunks/trunks.py",
    "core/security/verdict.py",
]

if os.environ.get("PBXTUI_PURE_PYTHON"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(["--ignore-missing-imports", *COMPILED_MODULES], opt_level="3"))
