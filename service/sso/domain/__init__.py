"""Pure rules of the SSO service: models, ports and use cases. No I/O libraries here."""
