"""Ingest: alerts and their zones as other systems send them, and SMS segment counting."""
