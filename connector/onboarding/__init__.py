"""Post-sync hooks: customer onboarding for new HubSpot contacts (DESIGN §6)."""
