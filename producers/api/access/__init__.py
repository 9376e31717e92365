"""Access control (docs/contract.md, Access control): OAuth2 clients, signed tokens,
scopes and roles, and the one
dependency every ``/v1`` route authenticates through (:mod:`.principal`)."""
