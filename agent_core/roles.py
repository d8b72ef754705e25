"""Who may do what: the user roles and the permissions each holds.

A route needs one permission (:attr:`agent_core.registrations.Route.needs`);
a user, a signed request's UI user and the agent key each hold a role.
"""

#: Permissions a route may need; the ``admin`` role holds both, ``read`` only ``read``.
PERMISSIONS = ("read", "write")
#: User roles and the permissions each holds.
ROLES: dict[str, tuple[str, ...]] = {"admin": ("read", "write"), "read": ("read",)}
