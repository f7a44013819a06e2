"""Services that keep their rows in the preference store (SPEC section 7)."""
