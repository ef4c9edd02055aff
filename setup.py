"""Build: the SIP core's per-message path compiled to C with mypyc, when it can be.

Every module below runs for every datagram (parse, validate, authenticate, register, proxy).
mypyc compiles the type-annotated Python as it stands, which halves its CPU cost per message;
the source stays the one truth and runs unchanged without the compiler.

Compiling needs a C compiler and the Python headers (Debian: gcc python3-dev). A fresh VPS
often has neither, so without them the install goes on as pure Python and says so once; so
does a build whose compilation fails. Set PBXTUI_PURE_PYTHON=1 to skip compiling on purpose
(while changing these modules: a stale compiled module would shadow the edited source).
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

COMPILED_MODULES = [
    "core/sip/address.py",
    "core/sip/bounded.py",
    "core/sip/digest.py",
    "core/sip/entropy.py",
    "core/sip/errors.py",
    "core/sip/fields.py",
    "core/sip/framing.py",
    "core/sip/headers.py",
    "core/sip/hostport.py",
    "core/sip/message.py",
    "core/sip/parser.py",
    "core/sip/timers.py",
    "core/sip/transaction.py",
    "core/sip/transaction_client.py",
    "core/sip/transaction_server.py",
    "core/sip/transaction_table.py",
    "core/sip/uri.py",
    "core/accounting/cdrs.py",
    "core/accounting/disposition.py",
    # Every call builds four events and every REGISTER refresh one: natively (the event
    # classes write their __init__ out), published on a compiled bus (the cluster's WorkerBus
    # subclasses it from interpreted code).
    "core/event_types.py",
    "core/events.py",
    # The users by name: the digest check's HA1, "TLS only", the callee of every call.
    "core/directory.py",
    # The event log's listener and its one line per call (pbxtui/eventlog.py
    # keeps the formats), the escaping every wire text shown goes through, and the list the
    # store's writes wait in (a CDR per call, a binding per REGISTER refresh).
    "core/eventlines.py",
    "core/printable.py",
    "core/store/pending.py",
    "core/security/auth.py",
    "core/security/bans.py",
    "core/proxy/calls.py",
    "core/proxy/decisions.py",
    "core/proxy/dialog_relay.py",
    "core/proxy/dialogs.py",
    "core/trunks/dialplan.py",
    "core/security/flood.py",
    "core/net/flow.py",
    "core/net/intake.py",
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
    "core/trunks/outbound.py",
    "core/trunks/trunks.py",
    "core/security/verdict.py",
    "core/security/sources.py",
    "core/security/destinations.py",
    "core/proxy/branch_mac.py",
    # The RTP relay's per-packet path, the SDP and bencode it reads per offer/answer, and the
    # anchoring hooks the proxy calls with every INVITE and answer.
    "core/media/bencode.py",
    "core/media/latch.py",
    "core/media/ports.py",
    "core/media/relay.py",
    "core/media/rtcp.py",
    "core/media/sdp.py",
    "core/media/anchor.py",
]

PURE_NOTICE = (
    "pbxtui: installing the SIP core as pure Python ({why}); it runs the same, at about half "
    "the speed per message. For the compiled core install gcc and python3-dev, then reinstall."
)


def missing_build_tools() -> str | None:
    """Why mypyc cannot compile here, or None: a C compiler and Python.h are both needed."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.is_file():
        return "no Python headers (python3-dev)"
    return None


class OptionalBuildExt(build_ext):
    """Compile if possible; a failed compilation leaves the pure-Python modules in place."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # CompileError, LinkError, a missing tool: all the same
            print(PURE_NOTICE.format(why=f"compiling failed: {error}"), file=sys.stderr)
            # mypyc's per-module shims need its shared library: keep all of them or none.
            for extension in self.extensions:
                Path(self.get_ext_fullpath(extension.name)).unlink(missing_ok=True)
            self.extensions = []


def extensions() -> list:
    """mypyc's extension modules, or none (with the reason said once) for a pure install."""
    if os.environ.get("PBXTUI_PURE_PYTHON"):
        return []
    why = missing_build_tools()
    if why is None:
        try:
            from mypyc.build import mypycify
        except ImportError:
            why = "mypyc is not installed"
        else:
            return mypycify(["--ignore-missing-imports", *COMPILED_MODULES], opt_level="3")
    print(PURE_NOTICE.format(why=why), file=sys.stderr)
    return []


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
