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
    "core/accounting.py",
    "core/auth.py",
    "core/bans.py",
    "core/calls.py",
    "core/dialogs.py",
    "core/dialplan.py",
    "core/flood.py",
    "core/flow.py",
    "core/forking.py",
    "core/gateways.py",
    "core/identity.py",
    "core/location.py",
    "core/natping.py",
    "core/netaddr.py",
    "core/pipeline.py",
    "core/proxy.py",
    "core/registrar.py",
    "core/routing.py",
    "core/sanity.py",
    "core/scanners.py",
    "core/seclog.py",
    "core/security.py",
    "core/strikes.py",
    "core/throttle.py",
    "core/tollfraud.py",
    "core/trunks.py",
    "core/verdict.py",
]

if os.environ.get("PBXTUI_PURE_PYTHON"):
    setup()
else:
    from mypyc.build import mypycify

    setup(ext_modules=mypycify(["--ignore-missing-imports", *COMPILED_MODULES], opt_level="3"))
