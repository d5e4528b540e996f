"""Object types beyond contacts: companies and deals (two-way), and the HubSpot objects that
roll up into Brevo contact attributes (tickets, engagements, custom objects) or come back from
Brevo (email events). Each is an :class:`~connector.objects.base.ObjectSync`."""
