"""Services that keep their rows in the preference store."""
