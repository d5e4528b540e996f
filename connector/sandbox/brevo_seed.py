"""Deterministic, realistic contacts for the Brevo sandbox (demo, tests, benchmarks)."""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable
from datetime import datetime, timedelta

from connector.sandbox.brevo_model import Contact, JSONDict


def generate_contacts(
    n: int,
    *,
    seed: int,
    now: datetime,
    first_id: int,
    email_taken: Callable[[str], bool],
    sms_taken: Callable[[str], bool],
) -> list[Contact]:
    """``n`` contacts with ids from ``first_id``, created over the 400 days before ``now``."""
    rng = random.Random(seed)
    start = now - timedelta(days=400)
    step = timedelta(days=400) / max(n, 1)
    out: list[Contact] = []
    seen: set[str] = set()
    for i in range(n):
        cid = first_id + i
        first = rng.choice(_FIRST)
        last = rng.choice(_LAST)
        domain = rng.choice(_DOMAINS)
        local = _ascii(f"{first}.{last}")
        email = f"{local}@{domain}"
        if email in seen or email_taken(email):
            email = f"{local}{cid}@{domain}"
        seen.add(email)
        created = _ms(min(start + step * i + timedelta(seconds=rng.randint(0, 59)), now))
        modified = created
        if rng.random() < 0.3:
            modified = _ms(created + (now - created) * rng.random())
        attrs: JSONDict = {"FIRSTNAME": first, "LASTNAME": last}
        if rng.random() < 0.5:
            attrs["JOB_TITLE"] = rng.choice(_JOBS)
        sms = None
        if rng.random() < 0.4:
            sms = _phone(rng, cid)
            if sms_taken(sms):
                sms = None
        lists = {10}
        if rng.random() < 0.2:
            lists.add(11)
        if rng.random() < 0.1:
            lists.add(12)
        out.append(
            Contact(
                id=cid,
                email=email,
                ext_id=None,
                sms=sms,
                attributes=attrs,
                email_blacklisted=rng.random() < 0.03,
                sms_blacklisted=False,
                list_ids=lists,
                created_at=created,
                modified_at=modified,
            )
        )
    return out


def _ms(t: datetime) -> datetime:
    return t.replace(microsecond=t.microsecond // 1000 * 1000)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return folded.lower().replace("'", "")


def _phone(rng: random.Random, i: int) -> str:
    """A possible mobile number, unique per ``i``: France, UK or Germany."""
    kind = rng.randrange(3)
    if kind == 0:
        return f"336{i % 100_000_000:08d}"
    if kind == 1:
        return f"447{700_000_000 + i % 100_000_000:09d}"
    return f"49151{i % 100_000_000:08d}"


_FIRST = _words(
    "Anna Liam Sofia Noah Emma Lucas Mia Elias Léa Hugo Chloé Louis Amelia Oliver Isla Jack "
    "Olivia Harry Ava Leo Zoé Gabriel Lina Jules Maya Adam Nora Arthur Ines Paul Clara Tom "
    "Hannah Ben Laura Felix Marta Pablo Lucia Diego Aisha Omar Yuki Kenji Priya Arjun Chen Wei "
    "Fatima Youssef Eva Max Julia Finn Lea Jonas Sara Matteo Giulia Luca"
)
_LAST = _words(
    "Martin Bernard Dubois Thomas Robert Petit Durand Leroy Moreau Simon Laurent Michel Garcia "
    "Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Smith Jones Taylor Brown "
    "Williams Wilson Johnson Davies Evans Rossi Russo Ferrari Esposito Bianchi Romano Colombo "
    "García Fernández González Rodríguez López Martínez Sánchez Pérez Silva Santos Oliveira "
    "Nakamura Tanaka Sato Kumar Sharma Patel Wang Li Zhang Kowalski Nowak Jansen O'Brien"
)
_DOMAINS = (
    "example.com",
    "example.org",
    "example.net",
    "mail.example.com",
    "acme.example",
    "globex.example",
    "initech.example",
    "umbrella.example",
)
_JOBS = (
    "Marketing Manager",
    "Head of Sales",
    "CTO",
    "Office Manager",
    "Account Executive",
    "Founder",
    "Product Manager",
    "Customer Success Lead",
    "Procurement Officer",
    "Engineer",
)
