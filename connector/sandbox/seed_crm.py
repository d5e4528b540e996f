"""CRM seed data for the sandboxes: companies, deals, tickets and engagements.

:func:`seed_hubspot_crm` gives the HubSpot sandbox, on top of its seeded contacts, a handful
of companies (one per company e-mail domain of the contacts, plus one without contacts) with
their contacts associated (primary company, and the contact's ``company`` property set to the
company's name as HubSpot's "create and associate companies" does), a few deals in the default
pipeline at various stages with an amount and a close date, associated with a contact and its
company, a few tickets (open and closed) and meetings, calls and notes associated with
contacts. :func:`seed_brevo_crm` gives the Brevo sandbox two companies of its own and one deal,
linked to Brevo contacts, so Brevo → HubSpot creation has something to do.

Both are deterministic (a seeded :class:`random.Random`, times relative to the sandbox's
clock) and write through the sandboxes' state directly: no webhook is fired (none is pointed
anywhere at seeding time) and no API call is logged. ``SandboxServers(seed_crm=True)`` calls
them after seeding contacts.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from connector.sandbox.brevo_state import BrevoState
from connector.sandbox.hubspot_state import HubSpotState

DAY_MS = 86_400_000


@dataclass(frozen=True)
class SeedCompany:
    """A company the seed creates, by the domain its contacts' e-mails use."""

    name: str
    domain: str
    industry: str
    employees: int
    city: str
    country: str


#: HubSpot companies: the first three match domains of the seeded HubSpot contacts
#: (``acme.test``, ``globex.test``, ``initech.test``); the last has no contact.
HUBSPOT_COMPANIES = (
    SeedCompany("Acme Corporation", "acme.test", "Manufacturing", 1200, "Lyon", "France"),
    SeedCompany("Globex", "globex.test", "Energy", 450, "Berlin", "Germany"),
    SeedCompany("Initech", "initech.test", "Software", 85, "London", "United Kingdom"),
    SeedCompany("Umbrella Health", "umbrella-health.test", "Healthcare", 3000, "Paris", "France"),
)
#: Brevo's own companies (domains HubSpot does not have: they are created there by the sync).
BREVO_COMPANIES = (
    SeedCompany("Vandelay Industries", "vandelay.example", "Import/Export", 40, "Madrid", "Spain"),
    SeedCompany("Wayne Enterprises", "wayne.example", "Conglomerate", 9000, "Montréal", "Canada"),
)
#: (deal name suffix, stage, amount range) of the HubSpot deals, for the companies with
#: contacts in turn
HUBSPOT_DEALS = (
    ("50 seats", "presentationscheduled", (18_000, 30_000)),
    ("renewal", "contractsent", (9_000, 20_000)),
    ("pilot", "closedwon", (4_000, 8_000)),
    ("expansion", "qualifiedtobuy", (30_000, 60_000)),
)
#: HubSpot association type ids (API_NOTES_HUBSPOT: HUBSPOT_DEFINED types)
CONTACT_TO_COMPANY_PRIMARY = 1
DEAL_TO_CONTACT = 3
DEAL_TO_COMPANY_PRIMARY = 5
TICKET_TO_CONTACT = 16
ENGAGEMENT_TO_CONTACT = {"notes": 202, "calls": 194, "meetings": 200}


def _midnight(ms: int) -> int:
    return ms - ms % DAY_MS


def _domain(email: object) -> str:
    return str(email or "").rsplit("@", 1)[-1].lower()


def seed_hubspot_crm(state: HubSpotState, seed: int = 0) -> dict[str, list[str]]:
    """Add the CRM seed to a HubSpot sandbox that already has its contacts; the ids created,
    per object type."""
    rng = random.Random(seed)
    now = state.now_ms()
    today = _midnight(now)
    contacts = sorted(state.stores["contacts"].live.items())
    created: dict[str, list[str]] = {
        t: [] for t in ("companies", "deals", "tickets", "meetings", "calls", "notes")
    }
    members: dict[int, list[int]] = {}
    for company in HUBSPOT_COMPANIES:
        obj = state.create(
            "companies",
            {
                "name": company.name,
                "domain": company.domain,
                "industry": company.industry,
                "numberofemployees": company.employees,
                "city": company.city,
                "country": company.country,
            },
            enforce_required=False,
            source="IMPORT",
        )
        created["companies"].append(str(obj.id))
        staff = [cid for cid, c in contacts if _domain(c.props.get("email")) == company.domain]
        members[obj.id] = staff
        for cid in staff:
            contact = state.stores["contacts"].live[cid]
            state.update(
                "contacts",
                contact,
                {"company": company.name},
                enforce_required=False,
                source="IMPORT",
            )
            state.associate(
                "contacts", cid, "companies", obj.id, CONTACT_TO_COMPANY_PRIMARY, source="IMPORT"
            )
    with_staff = [(cid, staff) for cid, staff in members.items() if staff]
    for (company_id, staff), (suffix, stage, (low, high)) in zip(
        itertools.cycle(with_staff), HUBSPOT_DEALS if with_staff else (), strict=False
    ):
        name = state.stores["companies"].live[company_id].props["name"]
        closes = (
            today + rng.randint(-20, 60) * DAY_MS if stage != "closedwon" else today - 7 * DAY_MS
        )
        deal = state.create(
            "deals",
            {
                "dealname": f"{name} — {suffix}",
                "amount": rng.randrange(low, high, 500),
                "pipeline": "default",
                "dealstage": stage,
                "closedate": closes,
                "dealtype": "newbusiness",
            },
            enforce_required=False,
            source="IMPORT",
        )
        created["deals"].append(str(deal.id))
        state.associate("deals", deal.id, "contacts", rng.choice(staff), DEAL_TO_CONTACT)
        state.associate(
            "deals", deal.id, "companies", company_id, DEAL_TO_COMPANY_PRIMARY, source="IMPORT"
        )
    people = [cid for cid, _ in contacts]
    picked = rng.sample(people, min(len(people), 8))
    for i, (subject, stage, priority) in enumerate(
        (
            ("Cannot export invoices", "1", "HIGH"),
            ("Password reset loop", "3", "URGENT"),
            ("Question about the API limits", "4", "LOW"),
        )
    ):
        if i >= len(picked):
            break
        ticket = state.create(
            "tickets",
            {
                "subject": subject,
                "content": f"{subject} — reported through the support form.",
                "hs_pipeline": "0",
                "hs_pipeline_stage": stage,
                "hs_ticket_priority": priority,
            },
            enforce_required=False,
            source="IMPORT",
        )
        created["tickets"].append(str(ticket.id))
        state.associate("tickets", ticket.id, "contacts", picked[i], TICKET_TO_CONTACT)
    engagements = (
        ("meetings", {"hs_meeting_title": "Discovery call", "hs_meeting_outcome": "COMPLETED"}),
        ("meetings", {"hs_meeting_title": "Product demo", "hs_meeting_outcome": "SCHEDULED"}),
        ("calls", {"hs_call_title": "Follow-up", "hs_call_direction": "OUTBOUND"}),
        ("calls", {"hs_call_title": "Pricing questions", "hs_call_direction": "INBOUND"}),
        ("notes", {"hs_note_body": "<p>Interested in the annual plan.</p>"}),
        ("notes", {"hs_note_body": "<p>Asked for a security questionnaire.</p>"}),
    )
    for i, (object_type, props) in enumerate(engagements):
        when = today - rng.randint(1, 40) * DAY_MS + rng.randint(8, 17) * 3_600_000
        if object_type == "meetings" and props["hs_meeting_outcome"] == "SCHEDULED":
            when = today + 3 * DAY_MS + 10 * 3_600_000
        values: dict[str, object] = {"hs_timestamp": when, **props}
        if object_type == "meetings":
            values |= {"hs_meeting_start_time": when, "hs_meeting_end_time": when + 1_800_000}
        obj = state.create(object_type, values, enforce_required=False, source="IMPORT")
        created[object_type].append(str(obj.id))
        if picked:
            who = picked[(i + 3) % len(picked)]
            state.associate(
                object_type, obj.id, "contacts", who, ENGAGEMENT_TO_CONTACT[object_type]
            )
    return created


def seed_brevo_crm(state: BrevoState, seed: int = 1) -> dict[str, list[str]]:
    """Add Brevo's own companies (linked to Brevo contacts) and one deal (linked to a contact
    and a company, in the second stage of the default pipeline); the ids created."""
    rng = random.Random(seed)
    crm = state.crm
    people = sorted(c.id for c in state.contacts.values() if c.email)
    picked = rng.sample(people, min(len(people), 3))
    companies: list[str] = []
    for i, company in enumerate(BREVO_COMPANIES):
        rec = crm.create(
            "company",
            company.name,
            {
                "domain": company.domain,
                "industry": company.industry,
                "number_of_employees": company.employees,
            },
        )
        companies.append(rec.id)
        rec.linked_contacts.extend(picked[i * 2 : i * 2 + 2])
    today = state.clock().date()
    deal = crm.create(
        "deal",
        "Vandelay Industries — annual plan",
        {
            "amount": rng.randrange(8_000, 15_000, 500),
            "pipeline": crm.pipeline_id,
            "deal_stage": crm.stages[1]["id"],
            "close_date": today.replace(day=1).isoformat(),
        },
    )
    if picked:
        deal.linked_contacts.append(picked[0])
    deal.linked_other.append(companies[0])
    crm.companies[companies[0]].linked_other.append(deal.id)
    return {"companies": companies, "deals": [deal.id]}


__all__ = [
    "BREVO_COMPANIES",
    "HUBSPOT_COMPANIES",
    "SeedCompany",
    "seed_brevo_crm",
    "seed_hubspot_crm",
]
