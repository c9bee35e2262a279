"""The dense reference: trained here or converted from the user's module, cached by content hash."""
