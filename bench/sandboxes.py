"""The benchmarks' sandbox process: both sandboxes on loopback, in a process of their own.

    python -m bench.sandboxes --info PATH [--hubspot N] [--brevo N] [--no-rate-limits]

Starts the HubSpot sandbox on the **Professional** tier (190 requests per rolling 10 s per app,
search 5 per second, 100 inputs per batch call) and the Brevo sandbox on the **general** plan
(its documented per-endpoint limits: contacts 10/s and 36,000/h, events 10/s, /processes and
other endpoints 100/h …; see ``connector.sandbox.brevo_state.RATE_LIMITS``), creates the
default mapping's custom fields on both sides, seeds the contacts asked for, installs the probe
routes (:mod:`connector.sandbox.probes`) and writes ``{"hubspot_url", "brevo_url", "pid"}`` to
``--info`` once both answer. It runs until SIGTERM/SIGINT. The connector and the drivers talk
to it only over HTTP, so its CPU is never counted as the connector's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path

from connector.mapping import Mapping, load_mapping
from connector.sandbox import probes
from connector.sandbox.brevo import BrevoState, create_brevo_app
from connector.sandbox.hubspot import HubSpotState, create_hubspot_app
from connector.sandbox.server import SandboxServers, _start

ROOT = Path(__file__).resolve().parents[1]
CUSTOM_HUBSPOT_PROPERTIES = ("preferred_channel", "customer_segment")


def create_custom_fields(hs: HubSpotState, br: BrevoState, mapping: Mapping) -> None:
    """The mapped fields the sandboxes do not define out of the box, on both sides."""
    for name in CUSTOM_HUBSPOT_PROPERTIES:
        hs.create_property(
            "contacts",
            {
                "name": name,
                "label": name,
                "type": "string",
                "fieldType": "text",
                "groupName": "contactinformation",
            },
        )
    for spec in mapping.brevo_attribute_specs():
        if spec.name in br.attributes or spec.name in ("FIRSTNAME", "LASTNAME", "SMS", "EMAIL"):
            continue
        body: dict[str, object] = {"type": spec.type}
        category = "normal"
        if spec.type == "category":
            category = "category"
            body["enumeration"] = [{"value": v, "label": label} for v, label in spec.enumeration]
        br.create_attribute(category, spec.name, body)


class BenchSandboxes(SandboxServers):
    """:class:`SandboxServers` with the probe routes installed before they serve."""

    marks: probes.Marks

    async def start(self) -> None:
        hs_app = create_hubspot_app(self.hubspot)
        br_app = create_brevo_app(self.brevo)
        self.marks = probes.install(hs_app, self.hubspot, br_app, self.brevo)
        self._running.append(await _start(hs_app, self.host, self.hubspot_port))
        self._running.append(await _start(br_app, self.host, self.brevo_port))


async def serve(args: argparse.Namespace) -> None:
    servers = BenchSandboxes(rate_limits=not args.no_rate_limits)
    servers.brevo.import_delay = args.import_delay
    mapping = load_mapping(ROOT / "mappings" / "contacts.yaml", default_region="US")
    create_custom_fields(servers.hubspot, servers.brevo, mapping)
    if args.hubspot:
        servers.hubspot.seed_contacts(args.hubspot)
    if args.brevo:
        servers.brevo.seed_contacts(args.brevo, seed=1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with servers:
        info = {"hubspot_url": servers.hubspot_url, "brevo_url": servers.brevo_url}
        tmp = Path(args.info).with_suffix(".tmp")
        tmp.write_text(json.dumps({**info, "pid": os.getpid()}), encoding="utf-8")
        tmp.replace(args.info)
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--info", required=True, help="Where to write the URLs (JSON).")
    parser.add_argument("--hubspot", type=int, default=0, help="HubSpot contacts to seed.")
    parser.add_argument("--brevo", type=int, default=0, help="Brevo contacts to seed.")
    parser.add_argument("--no-rate-limits", action="store_true")
    parser.add_argument(
        "--import-delay",
        type=float,
        default=0.2,
        help="Seconds a Brevo import stays queued (the sandbox's default).",
    )
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
